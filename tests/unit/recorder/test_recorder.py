"""The recorder's mechanics with a real EventLog and real spool files: accept, fill gaps
from the spool, seal, sweep; and the log's queries."""

from __future__ import annotations

import os
import time

from fleetd.recorder.eventlog import MIGRATIONS, EventLog
from fleetd.recorder.logic import UNBORN_GRACE_SECONDS, Pending, Recorder
from fleetd.runtime.spool import SpoolWriter
from shared import messages as m
from shared.paths import StatePaths
from tests.unit.recorder.streams import (
    BATCHES,
    CODEC,
    EXECUTION,
    FEED,
    TASK,
    accept,
    batch,
    event,
    sealed_at,
    stored_seqs,
    write_spool,
)

# --- accept and commit ----------------------------------------------------------------------


def test_batches_in_order_are_stored(recorder: Recorder, log: EventLog) -> None:
    pending = Pending()
    for item in BATCHES:
        accept(recorder, item, pending)
    recorder.commit(pending, 99)
    assert stored_seqs(log) == [(EXECUTION, s) for s in range(1, 7)]
    assert log.last_seq(EXECUTION) == 6
    assert log.page(TASK, 0, 0, 10) == [event(s) for s in range(1, 7)]


def test_accepted_batch_is_published_as_received(recorder: Recorder) -> None:
    pending = Pending()
    raw = CODEC.encode(BATCHES[0])
    recorder.accept(BATCHES[0], raw, pending)
    assert pending.published == [(TASK, raw)]
    assert pending.count == 2


def test_gap_is_filled_from_the_spool(recorder: Recorder, log: EventLog, paths: StatePaths) -> None:
    write_spool(paths, BATCHES)
    pending = Pending()
    accept(recorder, BATCHES[2], pending)
    recorder.commit(pending, 99)
    assert stored_seqs(log) == [(EXECUTION, s) for s in range(1, 7)]
    assert log.last_seq(EXECUTION) == 6


def test_filled_batch_is_published_with_the_gap(recorder: Recorder, paths: StatePaths) -> None:
    write_spool(paths, BATCHES)
    pending = Pending()
    accept(recorder, BATCHES[2], pending)
    [(task, raw)] = pending.published
    assert task == TASK
    published = FEED.decode(raw)
    assert published == m.EventBatch(
        task=TASK, execution=EXECUTION, events=[event(s) for s in range(1, 7)]
    )
    assert pending.count == 6


def test_gap_after_a_stored_prefix_is_filled(
    recorder: Recorder, log: EventLog, paths: StatePaths
) -> None:
    write_spool(paths, BATCHES)
    first = Pending()
    accept(recorder, BATCHES[0], first)
    recorder.commit(first, 99)
    second = Pending()
    accept(recorder, BATCHES[2], second)
    recorder.commit(second, 100)
    assert stored_seqs(log) == [(EXECUTION, s) for s in range(1, 7)]


def test_gap_is_filled_after_a_recorder_restart(log: EventLog, paths: StatePaths) -> None:
    write_spool(paths, BATCHES)
    before = Recorder(log, paths)
    pending = Pending()
    accept(before, BATCHES[0], pending)
    before.commit(pending, 99)
    after = Recorder(log, paths)
    pending = Pending()
    accept(after, BATCHES[2], pending)
    after.commit(pending, 100)
    assert stored_seqs(log) == [(EXECUTION, s) for s in range(1, 7)]


def test_duplicate_batch_in_one_iteration_is_stored_once(recorder: Recorder, log: EventLog) -> None:
    pending = Pending()
    accept(recorder, BATCHES[0], pending)
    accept(recorder, BATCHES[0], pending)
    assert len(pending.runs) == 1
    assert len(pending.published) == 1
    recorder.commit(pending, 99)
    assert stored_seqs(log) == [(EXECUTION, 1), (EXECUTION, 2)]


def test_duplicate_batch_after_commit_is_stored_once(recorder: Recorder, log: EventLog) -> None:
    for now in (99, 100):
        pending = Pending()
        accept(recorder, BATCHES[0], pending)
        recorder.commit(pending, now)
    assert stored_seqs(log) == [(EXECUTION, 1), (EXECUTION, 2)]


def test_overlapping_batch_stores_only_new_events(recorder: Recorder, log: EventLog) -> None:
    pending = Pending()
    accept(recorder, batch(1, 3), pending)
    accept(recorder, batch(2, 5), pending)
    assert [[e.seq for e in events] for _, _, events in pending.runs] == [[1, 2, 3], [4, 5]]
    recorder.commit(pending, 99)
    assert stored_seqs(log) == [(EXECUTION, s) for s in range(1, 6)]


def test_duplicate_replayed_into_a_new_log_is_stored_once(log: EventLog, paths: StatePaths) -> None:
    # Two recorders sharing one log (a restart while a batch was in flight).
    for _ in range(2):
        recorder = Recorder(log, paths)
        pending = Pending()
        accept(recorder, BATCHES[0], pending)
        recorder.commit(pending, 99)
    assert stored_seqs(log) == [(EXECUTION, 1), (EXECUTION, 2)]


# --- seal -----------------------------------------------------------------------------------


def test_seal_fills_up_to_last_seq_from_the_spool(
    recorder: Recorder, log: EventLog, paths: StatePaths
) -> None:
    spool = write_spool(paths, BATCHES)
    pending = Pending()
    accept(recorder, BATCHES[0], pending)
    end = m.StreamEnd(task=TASK, execution=EXECUTION, last_seq=6, spool=str(spool))
    recorder.seal(end, b"w1", b"ref", pending)
    assert pending.seals == [
        (b"w1", b"ref", m.StreamSealed(task=TASK, execution=EXECUTION, last_seq=6), spool)
    ]
    recorder.commit(pending, 500)
    assert stored_seqs(log) == [(EXECUTION, s) for s in range(1, 7)]
    assert sealed_at(log) == 500
    assert EXECUTION not in recorder.stored_upto


def test_seal_publishes_the_filled_events(recorder: Recorder, paths: StatePaths) -> None:
    spool = write_spool(paths, BATCHES)
    pending = Pending()
    end = m.StreamEnd(task=TASK, execution=EXECUTION, last_seq=6, spool=str(spool))
    recorder.seal(end, b"w1", b"ref", pending)
    [(task, raw)] = pending.published
    assert task == TASK
    assert [e.seq for e in FEED.decode(raw).events] == [1, 2, 3, 4, 5, 6]


def test_seal_of_a_complete_stream_reads_nothing_more(recorder: Recorder, log: EventLog) -> None:
    pending = Pending()
    for item in BATCHES:
        accept(recorder, item, pending)
    end = m.StreamEnd(task=TASK, execution=EXECUTION, last_seq=6, spool="")
    recorder.seal(end, b"w1", b"ref", pending)
    assert len(pending.runs) == 3
    assert pending.seals[0][3] is None
    recorder.commit(pending, 500)
    assert stored_seqs(log) == [(EXECUTION, s) for s in range(1, 7)]
    assert sealed_at(log) == 500


def test_seal_of_an_empty_stream(recorder: Recorder, log: EventLog) -> None:
    pending = Pending()
    end = m.StreamEnd(task=TASK, execution=EXECUTION, last_seq=0, spool="")
    recorder.seal(end, b"w1", b"ref", pending)
    recorder.commit(pending, 500)
    assert stored_seqs(log) == []
    assert sealed_at(log) == 500


# --- sweep ----------------------------------------------------------------------------------


def test_sweep_ingests_a_closed_spool(recorder: Recorder, log: EventLog, paths: StatePaths) -> None:
    spool = write_spool(paths, BATCHES)
    pending = Pending()
    assert recorder.sweep(pending) == [EXECUTION]
    [(peer, ref, sealed, path)] = pending.seals
    assert (peer, ref, path) == (b"", b"", spool)
    assert sealed == m.StreamSealed(task=TASK, execution=EXECUTION, last_seq=6)
    recorder.commit(pending, 700)
    assert stored_seqs(log) == [(EXECUTION, s) for s in range(1, 7)]
    assert sealed_at(log) == 700


def test_sweep_skips_a_spool_still_being_written(
    recorder: Recorder, log: EventLog, paths: StatePaths
) -> None:
    writer = SpoolWriter(paths.spool_file(EXECUTION))
    try:
        writer.append(CODEC.encode(BATCHES[0]))
        pending = Pending()
        assert recorder.sweep(pending) == []
        assert (pending.runs, pending.seals) == ([], [])
        assert paths.spool_file(EXECUTION).exists()
    finally:
        writer.close()


def test_sweep_takes_the_closed_and_leaves_the_open(
    recorder: Recorder, log: EventLog, paths: StatePaths
) -> None:
    write_spool(paths, [batch(1, 2, execution=4)], execution=4)
    writer = SpoolWriter(paths.spool_file(5))
    try:
        writer.append(CODEC.encode(batch(1, 1, execution=5)))
        pending = Pending()
        assert recorder.sweep(pending) == [4]
        recorder.commit(pending, 700)
        assert stored_seqs(log) == [(4, 1), (4, 2)]
    finally:
        writer.close()


def test_sweep_of_a_torn_spool_keeps_the_whole_records(
    recorder: Recorder, log: EventLog, paths: StatePaths
) -> None:
    path = write_spool(paths, BATCHES)
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size - 3)
    pending = Pending()
    recorder.sweep(pending)
    assert pending.seals[0][2].last_seq == 4
    recorder.commit(pending, 700)
    assert stored_seqs(log) == [(EXECUTION, s) for s in range(1, 5)]


def test_sweep_after_partial_delivery_stores_the_rest_once(
    recorder: Recorder, log: EventLog, paths: StatePaths
) -> None:
    write_spool(paths, BATCHES)
    pending = Pending()
    accept(recorder, BATCHES[0], pending)
    recorder.commit(pending, 99)
    pending = Pending()
    recorder.sweep(pending)
    assert pending.count == 4
    recorder.commit(pending, 700)
    assert stored_seqs(log) == [(EXECUTION, s) for s in range(1, 7)]


def test_sweep_removes_an_empty_spool(recorder: Recorder, paths: StatePaths) -> None:
    write_spool(paths, [])
    pending = Pending()
    assert recorder.sweep(pending) == [EXECUTION]
    assert pending.seals == []
    assert not paths.spool_file(EXECUTION).exists()


def test_sweep_drops_an_abandoned_unborn_spool(recorder: Recorder, paths: StatePaths) -> None:
    unborn = paths.spool_dir / f"{EXECUTION}.new"
    unborn.write_bytes(b"")
    old = time.time() - UNBORN_GRACE_SECONDS - 1
    os.utime(unborn, (old, old))
    assert recorder.sweep(Pending()) == []
    assert not unborn.exists()


def test_sweep_leaves_a_young_unborn_spool(recorder: Recorder, paths: StatePaths) -> None:
    # Its writer may be between creating and locking it.
    unborn = paths.spool_dir / f"{EXECUTION}.new"
    unborn.write_bytes(b"")
    assert recorder.sweep(Pending()) == []
    assert unborn.exists()


def test_sweep_ignores_foreign_files(recorder: Recorder, paths: StatePaths) -> None:
    foreign = paths.spool_dir / "notes.txt"
    foreign.write_text("hi")
    assert recorder.sweep(Pending()) == []
    assert foreign.exists()


# --- the log --------------------------------------------------------------------------------


def store_runs(log: EventLog) -> None:
    log.store(
        [
            (TASK, 3, [event(s, 3) for s in (1, 2, 3)]),
            (TASK, 5, [event(s, 5) for s in (1, 2)]),
            (8, 4, [event(s, 4) for s in (1, 2)]),
        ],
        [],
        99,
    )


def test_page_orders_by_execution_then_seq_within_the_task(log: EventLog) -> None:
    store_runs(log)
    assert [(e.execution, e.seq) for e in log.page(TASK, 0, 0, 100)] == [
        (3, 1),
        (3, 2),
        (3, 3),
        (5, 1),
        (5, 2),
    ]
    assert [(e.execution, e.seq) for e in log.page(8, 0, 0, 100)] == [(4, 1), (4, 2)]


def test_page_respects_limit_and_position(log: EventLog) -> None:
    store_runs(log)
    assert [(e.execution, e.seq) for e in log.page(TASK, 0, 0, 2)] == [(3, 1), (3, 2)]
    assert [(e.execution, e.seq) for e in log.page(TASK, 3, 2, 2)] == [(3, 3), (5, 1)]
    assert [(e.execution, e.seq) for e in log.page(TASK, 3, 3, 10)] == [(5, 1), (5, 2)]
    assert log.page(TASK, 5, 2, 10) == []


def test_page_of_unknown_task_is_empty(log: EventLog) -> None:
    store_runs(log)
    assert log.page(99, 0, 0, 10) == []


def test_last_seq_never_goes_back(log: EventLog) -> None:
    log.store([(TASK, 3, [event(s, 3) for s in (1, 2, 3)])], [], 1)
    log.store([(TASK, 3, [event(2, 3)])], [], 2)
    assert log.last_seq(3) == 3
    assert log.last_seq(42) == 0


def test_event_log_schema_version_and_wal(paths: StatePaths, sqlite_log: EventLog) -> None:
    assert sqlite_log.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert sqlite_log.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
