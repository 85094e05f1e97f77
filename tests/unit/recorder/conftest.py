"""Fixtures of the recorder's tests: a state directory, a real event log, a recorder.

The event log is each store in turn (`fleetd.stores.events`): events.db, and PostgreSQL (a
fresh database in the session's test cluster), so one suite holds both to the same rules.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fleetd.recorder.eventlog import EventLog
from fleetd.recorder.logic import Recorder
from fleetd.stores.events import EventStore
from shared.paths import StatePaths


@pytest.fixture(params=["sqlite", "postgres"])
def log(request: pytest.FixtureRequest, paths: StatePaths) -> Iterator[EventStore]:
    opened: EventStore
    if request.param == "postgres":
        from fleetd.stores.postgres_events import PostgresEventLog

        opened = PostgresEventLog.open(request.getfixturevalue("pg_url"))
    else:
        opened = EventLog.open(paths.events_db)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_log(paths: StatePaths) -> Iterator[EventLog]:
    opened = EventLog.open(paths.events_db)
    yield opened
    opened.close()


@pytest.fixture
def recorder(log: EventStore, paths: StatePaths) -> Recorder:
    return Recorder(log, paths)
