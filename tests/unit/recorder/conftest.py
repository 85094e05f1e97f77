"""Fixtures of the recorder's tests: a state directory, a real event log, a recorder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fleetd.recorder.eventlog import EventLog
from fleetd.recorder.logic import Recorder
from shared.paths import StatePaths


@pytest.fixture
def log(paths: StatePaths) -> Iterator[EventLog]:
    opened = EventLog.open(paths.events_db)
    yield opened
    opened.close()


@pytest.fixture
def recorder(log: EventLog, paths: StatePaths) -> Recorder:
    return Recorder(log, paths)
