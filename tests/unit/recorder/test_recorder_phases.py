"""The recorder's state machine: requests and `now` in, replies and publications out; the sweep
timer; and its stop (store what is queued, sweep once more, stop)."""

from __future__ import annotations

from fleetd.recorder.eventlog import EventLog
from fleetd.recorder.logic import SWEEP_INTERVAL_US, Phase, Publish, Recorder
from fleetd.runtime.routing import ToPeer
from shared import messages as m
from shared.paths import StatePaths
from tests.unit.recorder.streams import (
    BATCHES,
    CODEC,
    EXECUTION,
    FEED,
    TASK,
    batch,
    sealed_at,
    stored_seqs,
    write_spool,
)

WORKER = b"w1"


def send(recorder: Recorder, request: m.Message, now: int = 10, ref: bytes = b"r") -> list:
    return recorder.handle(WORKER, ref, request, CODEC.encode(request), now)


def published(out: list) -> list[m.Message]:
    return [FEED.decode(o.payload) for o in out if isinstance(o, Publish)]


def replies(out: list) -> list[ToPeer]:
    return [o for o in out if isinstance(o, ToPeer)]


def test_a_batch_is_stored_and_published_at_the_next_step(
    recorder: Recorder, log: EventLog
) -> None:
    assert send(recorder, BATCHES[0]) == []
    assert stored_seqs(log) == []  # not before the step's one transaction
    out = recorder.step(1)
    assert stored_seqs(log) == [(EXECUTION, 1), (EXECUTION, 2)]
    assert published(out) == [BATCHES[0]]
    assert [o.task for o in out] == [TASK]


def test_a_stream_end_is_sealed_and_the_worker_told_after_storing(
    recorder: Recorder, log: EventLog, paths: StatePaths
) -> None:
    recorder.step(0)  # the first sweep (the test's spool is closed: it would be swept)
    spool = write_spool(paths, BATCHES[:1])
    send(recorder, BATCHES[0])
    end = m.StreamEnd(task=TASK, execution=EXECUTION, last_seq=2, spool=str(spool))
    assert send(recorder, end, ref=b"end") == []
    out = recorder.step(1)
    sealed = m.StreamSealed(task=TASK, execution=EXECUTION, last_seq=2)
    assert replies(out) == [ToPeer(WORKER, b"end", sealed)]
    assert published(out) == [BATCHES[0], sealed]
    assert sealed_at(log) == 1
    assert not spool.exists()  # every event is in the log now


def test_an_event_query_is_answered_at_once(recorder: Recorder) -> None:
    send(recorder, BATCHES[0])
    recorder.step(1)
    out = send(recorder, m.GetEvents(task=TASK, limit=1), ref=b"q")
    [reply] = out
    assert reply.ref == b"q" and isinstance(reply.message, m.EventPage)
    assert [e.seq for e in reply.message.events] == [1]
    assert reply.message.more is True


def test_the_latest_events_and_the_count_of_all(recorder: Recorder) -> None:
    for item in BATCHES:
        send(recorder, item)
    recorder.step(1)
    [latest] = send(recorder, m.GetEvents(task=TASK, limit=2, latest=True), ref=b"q")
    assert isinstance(latest.message, m.EventPage)
    assert [e.seq for e in latest.message.events] == [5, 6]
    assert latest.message.more is False
    [count] = send(recorder, m.CountEvents(), ref=b"c")
    assert count.message == m.EventCount(events=6)


def test_a_request_of_another_channel_gets_an_error_reply(recorder: Recorder) -> None:
    [reply] = recorder.handle(WORKER, b"x", m.Ready(worker="w1", pid=1), b"", 1)
    assert isinstance(reply.message, m.ErrorReply) and reply.message.code == "bad_request"


def test_full_once_a_transaction_worth_of_events_waits(log: EventLog, paths: StatePaths) -> None:
    recorder = Recorder(log, paths, batch_max=3)
    send(recorder, BATCHES[0])
    assert not recorder.full
    send(recorder, BATCHES[1])
    assert recorder.full
    recorder.step(1)
    assert not recorder.full


def test_the_sweep_runs_at_its_interval(
    recorder: Recorder, log: EventLog, paths: StatePaths
) -> None:
    recorder.step(0)  # the first step sweeps
    write_spool(paths, BATCHES)
    recorder.step(SWEEP_INTERVAL_US - 1)
    assert stored_seqs(log) == []
    out = recorder.step(SWEEP_INTERVAL_US)
    assert len(stored_seqs(log)) == 6
    assert replies(out) == []  # a swept spool has no worker waiting on it


def test_stop_stores_what_is_queued_then_sweeps_once_and_stops(
    recorder: Recorder, log: EventLog, paths: StatePaths
) -> None:
    recorder.step(0)
    write_spool(paths, [batch(1, 6, execution=EXECUTION + 1)], EXECUTION + 1)  # a dead worker's
    send(recorder, BATCHES[0])
    recorder.stop()
    assert recorder.phase is Phase.DRAINING
    recorder.step(1)  # what was queued
    assert recorder.phase is Phase.DRAINING
    assert stored_seqs(log) == [(EXECUTION, 1), (EXECUTION, 2)]
    recorder.step(2)  # nothing more came: the last sweep
    assert recorder.phase is Phase.STOPPED
    assert (EXECUTION + 1, 6) in [(e.execution, e.seq) for e in log.page(TASK, 0, 0, 100)]


def test_a_second_stop_changes_nothing(recorder: Recorder) -> None:
    recorder.stop()
    recorder.step(1)
    assert recorder.phase is Phase.STOPPED
    recorder.stop()
    assert recorder.phase is Phase.STOPPED
