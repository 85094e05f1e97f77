"""The run counters of /metrics, computed from queue.db: each finished execution counted once.

An execution changes once, from running to its outcome, and never again; ids only grow. So
each ask reads only the executions new since the last ask and those that were running then
(a few: one a worker), and adds the finished ones up for good: a scrape costs what happened
since the last one, however long a run lasts or however many there were. A restarted broker
starts from nothing and catches up in one pass: the counters never go back.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Protocol

import apsw
import msgspec

from shared import messages as m

DURATION_BOUNDS = [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0]
DISPATCH_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
TOKEN_KINDS = ("input", "cached_input", "output", "reasoning_output")

_COLUMNS = """
    SELECT e.id, coalesce(json_extract(t.spec, '$.agent'), 'codex'), e.outcome, e.attempt,
           e.claimed_at, e.started_at, e.finished_at, t.enqueued_at,
           json_extract(e.result, '$.usage.input_tokens'),
           json_extract(e.result, '$.usage.cached_input_tokens'),
           json_extract(e.result, '$.usage.output_tokens'),
           json_extract(e.result, '$.usage.reasoning_output_tokens'),
           json_extract(e.result, '$.failure_class')
    FROM executions e JOIN tasks t ON t.id = e.task_id
"""
_NEW = _COLUMNS + " WHERE e.id > ?"
_OPEN = _COLUMNS + " WHERE e.id IN (SELECT value FROM json_each(?))"


class Buckets:
    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def histogram(self) -> m.Histogram:
        return m.Histogram(bounds=self.bounds, counts=list(self.counts), total=self.total)


class Totals:
    """Counts over a set of executions."""

    def __init__(self) -> None:
        self.runs: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.durations: defaultdict[str, Buckets] = defaultdict(lambda: Buckets(DURATION_BOUNDS))
        self.dispatch = Buckets(DISPATCH_BOUNDS)
        self.tokens: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.failures: defaultdict[str, int] = defaultdict(int)

    def add_rows(self, rows: list[tuple]) -> None:
        for _, agent, outcome, attempt, claimed, started, finished, enqueued, *rest in rows:
            *tokens, failure_class = rest
            self.runs[agent][outcome] += 1
            if started is not None and finished is not None:
                self.durations[agent].add(max(0, finished - started) / 1e6)
            if attempt == 1:
                self.dispatch.add(max(0, claimed - enqueued) / 1e6)
            for kind, count in zip(TOKEN_KINDS, tokens, strict=True):
                if count:
                    self.tokens[agent][kind] += int(count)
            if failure_class and outcome != "succeeded":
                self.failures[failure_class] += 1

    def reply(self, queue_oldest_us: int | None) -> m.RunTotals:
        return m.RunTotals(
            runs={agent: dict(outcomes) for agent, outcomes in self.runs.items()},
            durations={agent: b.histogram() for agent, b in self.durations.items()},
            dispatch=self.dispatch.histogram(),
            tokens={agent: dict(kinds) for agent, kinds in self.tokens.items()},
            failures=dict(self.failures),
            queue_oldest_us=queue_oldest_us,
        )


class RunTally:
    """The broker's counters: every finished execution added up once, as it is first seen."""

    def __init__(self) -> None:
        self.counted = Totals()
        self.seen_upto = 0  # every execution up to this id has been read once
        self.running: set[int] = set()  # those of them that were running then

    def totals(self, store: TallyReads) -> m.RunTotals:
        rows = store.tally_rows(self.seen_upto, sorted(self.running))
        finished = []
        for row in rows:
            execution, outcome = row[0], row[2]
            self.seen_upto = max(self.seen_upto, execution)
            if outcome == "running":
                self.running.add(execution)
            else:
                self.running.discard(execution)
                finished.append(row)
        self.counted.add_rows(finished)
        return self.counted.reply(store.oldest_queued())


class TallyReads(Protocol):
    """What the tally reads of a store (`tally_rows` below, for SQLite)."""

    def tally_rows(self, after: int, running: list[int]) -> list[tuple]: ...

    def oldest_queued(self) -> int | None: ...


def tally_rows(conn: apsw.Connection, after: int, running: list[int]) -> list[tuple]:
    """The executions after id `after` and those of `running`, as `Totals.add_rows` takes them."""
    rows = conn.execute(_NEW, (after,)).fetchall()
    if running:
        rows += conn.execute(_OPEN, (msgspec.json.encode(running).decode(),)).fetchall()
    return rows


def oldest_queued(conn: apsw.Connection) -> int | None:
    return conn.execute("SELECT min(enqueued_at) FROM tasks WHERE state = 'queued'").fetchone()[0]
