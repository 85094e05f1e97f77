"""The event log's insert: multi-row INSERTs of `ROWS_PER_INSERT` events, single rows for the
rest; every event comes back as sent, in order, and a resent one is stored once."""

from __future__ import annotations

import pytest

from fleetd.recorder.eventlog import ROWS_PER_INSERT, EventLog
from shared.models import EventRecord

TASK = 3


def events(execution: int, first: int, last: int) -> list[EventRecord]:
    return [
        EventRecord(execution, seq, 1000 + seq, f"t{seq % 3}", seq % 4, b'{"n":%d}\xff' % seq)
        for seq in range(first, last + 1)
    ]


@pytest.mark.parametrize(
    "count", [1, ROWS_PER_INSERT - 1, ROWS_PER_INSERT, 3 * ROWS_PER_INSERT + 7]
)
def test_a_run_of_any_length_is_stored_whole_and_in_order(log: EventLog, count: int) -> None:
    sent = events(7, 1, count)
    log.store([(TASK, 7, sent)], [], 1)
    assert log.page(TASK, 0, 0, 10_000) == sent
    assert log.last_seq(7) == count


def test_a_resent_overlap_is_stored_once(log: EventLog) -> None:
    first = events(7, 1, 2 * ROWS_PER_INSERT)
    log.store([(TASK, 7, first)], [], 1)
    overlap = events(7, ROWS_PER_INSERT + 1, 3 * ROWS_PER_INSERT + 5)
    log.store([(TASK, 7, overlap)], [], 2)
    assert log.page(TASK, 0, 0, 10_000) == events(7, 1, 3 * ROWS_PER_INSERT + 5)
    assert log.total_events() == 3 * ROWS_PER_INSERT + 5


def test_runs_of_several_executions_in_one_transaction(log: EventLog) -> None:
    log.store([(TASK, 7, events(7, 1, 70)), (TASK, 8, events(8, 1, 5))], [(TASK, 8)], 9)
    assert log.page(TASK, 0, 0, 10_000) == events(7, 1, 70) + events(8, 1, 5)
    assert (log.last_seq(7), log.last_seq(8)) == (70, 5)
