"""The run counters of /metrics, computed from queue.db: each finished execution counted once.

Executions below the oldest running one can no longer change, so they are added up once and
kept (`done_below` moves up as runs end); the few after it are added up again on each ask.
A restarted broker starts from zero and catches up in one pass: the counters never go back.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

import apsw

from shared import messages as m
from shared.models import INT64_MAX

DURATION_BOUNDS = [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0]
DISPATCH_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
TOKEN_KINDS = ("input", "cached_input", "output", "reasoning_output")

_ROWS = """
    SELECT coalesce(json_extract(t.spec, '$.agent'), 'codex'), e.outcome, e.attempt,
           e.claimed_at, e.started_at, e.finished_at, t.enqueued_at,
           json_extract(e.result, '$.usage.input_tokens'),
           json_extract(e.result, '$.usage.cached_input_tokens'),
           json_extract(e.result, '$.usage.output_tokens'),
           json_extract(e.result, '$.usage.reasoning_output_tokens'),
           json_extract(e.result, '$.failure_class')
    FROM executions e JOIN tasks t ON t.id = e.task_id
    WHERE e.id >= ? AND e.id < ? AND e.outcome != 'running'
"""


class Buckets:
    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def merged(self, other: Buckets) -> m.Histogram:
        counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        return m.Histogram(bounds=self.bounds, counts=counts, total=self.total + other.total)


class Totals:
    """Counts over a set of executions."""

    def __init__(self) -> None:
        self.runs: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.durations: defaultdict[str, Buckets] = defaultdict(lambda: Buckets(DURATION_BOUNDS))
        self.dispatch = Buckets(DISPATCH_BOUNDS)
        self.tokens: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.failures: defaultdict[str, int] = defaultdict(int)

    def add_rows(self, rows: list[tuple]) -> None:
        for agent, outcome, attempt, claimed, started, finished, enqueued, *rest in rows:
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

    def with_(self, tail: Totals, queue_oldest_us: int | None) -> m.RunTotals:
        agents = set(self.runs) | set(tail.runs)
        empty = Buckets(DURATION_BOUNDS)
        return m.RunTotals(
            runs={a: _sum(self.runs.get(a, {}), tail.runs.get(a, {})) for a in agents},
            durations={
                a: self.durations.get(a, empty).merged(tail.durations.get(a, empty))
                for a in set(self.durations) | set(tail.durations)
            },
            dispatch=self.dispatch.merged(tail.dispatch),
            tokens={
                a: _sum(self.tokens.get(a, {}), tail.tokens.get(a, {}))
                for a in set(self.tokens) | set(tail.tokens)
            },
            failures=_sum(self.failures, tail.failures),
            queue_oldest_us=queue_oldest_us,
        )


def _sum(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {key: a.get(key, 0) + b.get(key, 0) for key in set(a) | set(b)}


class RunTally:
    """The broker's counters: what is settled, kept; the rest, added up on each ask."""

    def __init__(self) -> None:
        self.settled = Totals()
        self.done_below = 1  # every execution below this id is closed and in `settled`

    def totals(self, conn: apsw.Connection) -> m.RunTotals:
        (first_running,) = conn.execute(
            "SELECT min(id) FROM executions WHERE outcome = 'running'"
        ).fetchone()
        settle_to = first_running if first_running is not None else self._next_id(conn)
        if settle_to > self.done_below:
            self.settled.add_rows(conn.execute(_ROWS, (self.done_below, settle_to)).fetchall())
            self.done_below = settle_to
        tail = Totals()
        tail.add_rows(conn.execute(_ROWS, (self.done_below, INT64_MAX)).fetchall())
        (oldest,) = conn.execute(
            "SELECT min(enqueued_at) FROM tasks WHERE state = 'queued'"
        ).fetchone()
        return self.settled.with_(tail, oldest)

    @staticmethod
    def _next_id(conn: apsw.Connection) -> int:
        (last,) = conn.execute("SELECT max(id) FROM executions").fetchone()
        return (last or 0) + 1
