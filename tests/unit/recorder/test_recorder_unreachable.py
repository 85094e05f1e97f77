"""The recorder over PostgreSQL when the database goes away: nothing crashes, nothing is lost.

Batches and ends that arrive while it is down are left to the spools (the worker's first
write), queries hear `unavailable`, and once the cluster is back the next batch fills the gap
from the spool; no message names the password.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from loguru import logger

from fleetd.recorder.logic import Publish, Recorder
from fleetd.runtime.routing import ToPeer
from fleetd.stores.errors import StoreUnavailable
from fleetd.stores.postgres_events import PostgresEventLog
from shared import messages as m
from shared.paths import StatePaths
from tests.support.postgres import PASSWORD, PgCluster
from tests.unit.recorder.streams import BATCHES, CODEC, EXECUTION, TASK, batch, stored_seqs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pg_log(pg_url: str) -> Iterator[PostgresEventLog]:
    opened = PostgresEventLog.open(pg_url)
    yield opened
    opened.close()


@pytest.fixture
def logged() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message}")
    yield lines
    logger.remove(sink)


def send(recorder: Recorder, message: m.Message) -> list:
    raw = CODEC.encode(message)
    return recorder.handle(b"w1", b"r", message, raw, time.time_ns() // 1000)


def test_an_outage_leaves_events_to_the_spool_and_they_are_stored_after(
    pg_cluster: PgCluster,
    pg_log: PostgresEventLog,
    paths: StatePaths,
    logged: list[str],
) -> None:
    from tests.unit.recorder.streams import write_spool

    recorder = Recorder(pg_log, paths)
    write_spool(paths, BATCHES[:1])
    send(recorder, BATCHES[0])
    assert any(isinstance(o, Publish) for o in recorder.step(1))
    assert stored_seqs(pg_log) == [(EXECUTION, 1), (EXECUTION, 2)]

    pg_cluster.stop()
    try:
        write_spool(paths, BATCHES)  # the worker spools before it sends
        assert send(recorder, BATCHES[1]) == []
        assert recorder.step(2) == []  # postponed: no follower hears of unstored events
        [reply] = send(recorder, m.GetEvents(task=TASK))
        assert isinstance(reply, ToPeer) and isinstance(reply.message, m.ErrorReply)
        assert reply.message.code == "unavailable"
        with pytest.raises(StoreUnavailable):
            pg_log.last_seq(EXECUTION)
    finally:
        pg_cluster.start()

    deadline = time.monotonic() + 30
    while stored_seqs_or_none(pg_log) != [(EXECUTION, s) for s in range(1, 7)]:
        assert time.monotonic() < deadline, "the recorder did not catch up after the outage"
        send(recorder, BATCHES[2])  # skips ahead: the gap comes from the spool
        recorder.step(3)
        time.sleep(0.2)
    text = "\n".join(logged)
    assert "cannot be reached" in text
    assert PASSWORD not in text and PASSWORD not in reply.message.message


def stored_seqs_or_none(log: PostgresEventLog) -> list[tuple[int, int]] | None:
    try:
        return stored_seqs(log)
    except StoreUnavailable:
        return None


def test_a_batch_stored_twice_is_stored_once(pg_log: PostgresEventLog) -> None:
    events = batch(1, 3).events
    pg_log.store([(TASK, EXECUTION, events)], [], 1)
    pg_log.store([(TASK, EXECUTION, events + batch(4, 4).events)], [(TASK, EXECUTION)], 2)
    assert stored_seqs(pg_log) == [(EXECUTION, s) for s in range(1, 5)]
    assert pg_log.total_events() == 4


def test_two_logs_on_one_database_see_each_others_events(pg_url: str) -> None:
    """Two nodes' recorders: each writes its own executions; each reads them all."""
    first, second = PostgresEventLog.open(pg_url), PostgresEventLog.open(pg_url)
    try:
        first.store([(TASK, 1, batch(1, 2, execution=1).events)], [], 1)
        second.store([(TASK, 2, batch(1, 1, execution=2).events)], [], 2)
        assert stored_seqs(first) == stored_seqs(second) == [(1, 1), (1, 2), (2, 1)]
    finally:
        first.close()
        second.close()
