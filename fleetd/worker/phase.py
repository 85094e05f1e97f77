"""The phases of a worker's attempts (see `fleetd.worker.logic`)."""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    IDLE = "idle"
    PREPARING = "preparing"
    RUNNING = "running"
    COMMITTING = "committing"
    SEALING = "sealing"
    REPORTING = "reporting"
