"""Nodes: throughput and dispatch latency with 1, 2 and 3 fleetd nodes sharing a PostgreSQL
queue (a cluster this benchmark starts, as the tests do), beside one node on SQLite.

Each node has 2 workers. Throughput: no-op command tasks enqueued at once through the first
node; rate = tasks / (just before the Enqueue -> the last `finished_at` in the store).
Dispatch latency: one task at a time onto idle nodes, `started_at` (the agent's start, as the
worker reports it) minus `enqueued_at`, both from the store; median and p90. All nodes run on
this one machine (2 cores, shared): more nodes add processes, not cores, so the figures show
what the shared queue costs, not how a fleet of real hosts scales.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from bench.common import Report, clean_env, median, percentile, say
from shared import messages as m
from shared.models import TaskSpec
from tests.support.fleet import Fleet, short_tempdir, wait_for

ARGV = ["/bin/echo", '{"type":"noop"}']
WORKERS = 2


@contextlib.contextmanager
def _nodes(count: int, url: str | None) -> Iterator[list[Fleet]]:
    root = short_tempdir("bn")
    fleets = []
    try:
        for index in range(count):
            extra = {"FLEET_NODE_NAME": f"n{index + 1}"}
            if url is not None:
                extra["FLEET_QUEUE_URL"] = url
            fleet = Fleet(root / f"n{index + 1}", clean_env(extra))
            fleets.append(fleet.start("--workers", str(WORKERS), wait=False))
        for fleet in fleets:
            fleet.wait_ready(timeout=60.0, idle=WORKERS)
        yield fleets
    finally:
        for fleet in fleets:
            fleet.close()


def _times(fleet: Fleet, ids: list[int]) -> list[tuple[int, int | None, int | None]]:
    """(enqueued_at, started_at of its execution, finished_at) per task, from `show`."""
    out = []
    for task in ids:
        reply = fleet.request(m.ShowTask(task=task))
        assert isinstance(reply, m.TaskDetail)
        view = reply.task
        started = view.executions[-1].started_at if view.executions else None
        out.append((view.enqueued_at, started, view.finished_at))
    return out


def _throughput(fleets: list[Fleet], total: int) -> float:
    first = fleets[0]
    before = first.status().counts.get("succeeded", 0)
    specs = [TaskSpec(prompt="noop", agent="command", argv=ARGV) for _ in range(total)]
    begun = time.time_ns() // 1000
    reply = first.request(m.Enqueue(tasks=specs))
    assert isinstance(reply, m.Enqueued)
    wait_for(
        lambda: first.status().counts.get("succeeded", 0) >= before + total,
        600,
        0.25,
        "the throughput tasks to end",
    )
    last = max(f for _, _, f in _times(first, list(reply.ids)) if f is not None)
    return total / ((last - begun) / 1e6)


def _dispatch(fleets: list[Fleet], count: int) -> list[float]:
    first = fleets[0]
    latencies = []
    for _ in range(count):
        reply = first.request(m.Enqueue(tasks=[TaskSpec(prompt="d", agent="command", argv=ARGV)]))
        assert isinstance(reply, m.Enqueued)
        task = reply.ids[0]
        wait_for(lambda t=task: _times(first, [t])[0][2] is not None, 60, 0.02, "a task to end")
        enqueued, started, _ = _times(first, [task])[0]
        assert started is not None
        latencies.append((started - enqueued) / 1000)
        time.sleep(0.2)  # every worker idle again, its Ready heard
    return latencies


def run(quick: bool, runs: int) -> Report:
    from tests.support.postgres import start_cluster

    total = 200 if quick else 600
    singles = 20 if quick else 40
    report = Report(
        "nodes",
        f"{total} no-op tasks and {singles} single dispatches; {WORKERS} workers per node",
    )
    cluster = start_cluster()
    rows = []
    try:
        setups = [("SQLite, 1 node", 1, None)] + [
            (f"PostgreSQL, {n} node{'s' if n > 1 else ''}", n, "pg") for n in (1, 2, 3)
        ]
        for label, count, kind in setups:
            rates, p50s, p90s = [], [], []
            for index in range(runs):
                url = cluster.url(cluster.create_database()) if kind else None
                with _nodes(count, url) as fleets:
                    rates.append(_throughput(fleets, total))
                    lat = _dispatch(fleets, singles)
                p50s.append(median(lat))
                p90s.append(percentile(lat, 90))
                say(f"  {label} run {index + 1}: {rates[-1]:.0f} tasks/s, p50 {p50s[-1]:.1f} ms")
            report.check(f"{label}: throughput", median(rates), "tasks/s", "", None, rates, 0)
            report.check(f"{label}: dispatch p50", median(p50s), "ms", "", None, p50s, 1)
            report.check(f"{label}: dispatch p90", median(p90s), "ms", "", None, p90s, 1)
            rows.append((label, f"{median(rates):.0f}", f"{median(p50s):.1f}"))
    finally:
        cluster.destroy()
    report.extra_tables.append((("setup", "tasks/s", "dispatch p50 ms"), rows))
    return report
