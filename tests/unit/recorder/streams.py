"""Events, batches and spools of one execution, as the recorder's tests build and read them."""

from __future__ import annotations

from pathlib import Path

from fleetd.recorder.eventlog import EventLog
from fleetd.recorder.logic import Pending, Recorder
from fleetd.runtime.spool import SpoolWriter
from fleetd.stores.events import EventStore
from shared import messages as m
from shared.models import EventRecord
from shared.paths import StatePaths

TASK = 7
EXECUTION = 3
CODEC = m.RECORDER_REQUESTS
FEED = m.FEED


def event(seq: int, execution: int = EXECUTION) -> EventRecord:
    return EventRecord(
        execution=execution,
        seq=seq,
        ts=1000 + seq,
        type="item.completed",
        flags=0,
        payload=b'{"seq":%d}' % seq,
    )


def batch(first: int, last: int, execution: int = EXECUTION, task: int = TASK) -> m.EventBatch:
    events = [event(seq, execution) for seq in range(first, last + 1)]
    return m.EventBatch(task=task, execution=execution, events=events)


# Batches 1..3 of one execution: seqs 1-2, 3-4, 5-6.
BATCHES = [batch(1, 2), batch(3, 4), batch(5, 6)]


def write_spool(paths: StatePaths, batches: list[m.EventBatch], execution: int = EXECUTION) -> Path:
    writer = SpoolWriter(paths.spool_file(execution))
    for item in batches:
        writer.append(CODEC.encode(item))
    writer.close()
    return paths.spool_file(execution)


def stored_seqs(log: EventStore, task: int = TASK) -> list[tuple[int, int]]:
    return [(e.execution, e.seq) for e in log.page(task, 0, 0, 1000)]


def accept(recorder: Recorder, item: m.EventBatch, pending: Pending) -> None:
    recorder.accept(item, CODEC.encode(item), pending)


def sealed_at(log: EventStore, execution: int = EXECUTION) -> int | None:
    if isinstance(log, EventLog):
        sql = "SELECT sealed_at FROM streams WHERE execution_id = ?"
        row = log.conn.execute(sql, (execution,)).fetchone()
    else:
        with log.db.cursor() as cur:  # PostgresEventLog
            sql = "SELECT sealed_at FROM event_streams WHERE execution_id = %s"
            row = cur.execute(sql, (execution,)).fetchone()
    return row[0] if row else None
