"""The event log's seam: what the recorder asks of its store, and the factory that opens one.

SQLite (`fleetd.recorder.eventlog.EventLog`, events.db in the state directory) on one host;
PostgreSQL (`fleetd.stores.postgres_events.PostgresEventLog`) when `queue.url` names one, so
that every node reads every task's events and none is stranded on a dead host's disk. The
recorder holds an `EventStore` and never asks which one it has.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from shared.config import FleetConfig
from shared.models import EventRecord


class EventStore(Protocol):
    """Streams (one per execution) and their events; (execution, seq) makes writes idempotent.

    `store` raises `fleetd.stores.errors.StoreUnavailable` when the database cannot be
    reached (nothing was stored: the spools still hold every event), the SQLite one
    `apsw.FullError` when its disk is full.
    """

    def store(
        self,
        runs: Iterable[tuple[int, int, list[EventRecord]]],
        sealed: Iterable[tuple[int, int]],
        now: int,
    ) -> None: ...

    def total_events(self) -> int: ...

    def last_seq(self, execution: int) -> int: ...

    def latest(self, task: int, limit: int) -> list[EventRecord]: ...

    def page(
        self, task: int, after_execution: int, after_seq: int, limit: int
    ) -> list[EventRecord]: ...

    def close(self) -> None: ...


def open_event_store(config: FleetConfig) -> EventStore:
    """The event log for this config: PostgreSQL when `queue.url` names it, else events.db."""
    if config.queue.postgres:
        from fleetd.stores.postgres_events import PostgresEventLog  # psycopg only for it

        return PostgresEventLog.open(config.queue.url)
    from fleetd.recorder.eventlog import EventLog

    return EventLog.open(config.paths().events_db)
