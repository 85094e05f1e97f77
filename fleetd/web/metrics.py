"""`GET /metrics`: the fleet in Prometheus' text format, through prometheus-client.

Every value comes from the process that owns it, asked at each scrape: task and worker
counts and restarts from the supervisor's status, run counters from the broker (added up
from queue.db), events from the recorder. The web process keeps none, so a restart of it
changes nothing a scrape sees. Labels are agent kinds, outcomes, states, failure classes,
token kinds and roles: never a prompt, a path, a label value or a secret.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fleetd.web.app import error_json, guarded, web_of
from shared import messages as m
from shared.errors import FleetError
from shared.models import TASK_STATES, now_us

PREFIX = "agent_fleet_"
WORKER_STATES = ("idle", "busy", "starting")


class Snapshot:
    """One scrape's answers, turned into metric families (prometheus-client's collector
    protocol: `collect()`)."""

    def __init__(self, status: m.Status, runs: m.RunTotals, events: m.EventCount, now: int):
        self.status, self.runs, self.events, self.now = status, runs, events, now

    def collect(self) -> Iterator[Metric]:
        yield from self._gauges()
        yield from self._counters()
        yield from self._histograms()

    def _gauges(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(PREFIX + "tasks", "tasks per state", labels=["state"])
        for state in TASK_STATES:
            tasks.add_metric([state], self.status.counts.get(state, 0))
        yield tasks
        workers = GaugeMetricFamily(PREFIX + "workers", "workers per state", labels=["state"])
        for state in WORKER_STATES:
            workers.add_metric([state], sum(w.state == state for w in self.status.workers))
        yield workers
        oldest = self.runs.queue_oldest_us
        yield GaugeMetricFamily(
            PREFIX + "queue_oldest_seconds",
            "how long the longest-waiting queued task has waited (0: none queued)",
            value=max(0.0, (self.now - oldest) / 1e6) if oldest is not None else 0.0,
        )

    def _counters(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            PREFIX + "runs", "finished agent runs (executions)", labels=["agent", "outcome"]
        )
        for agent, outcomes in sorted(self.runs.runs.items()):
            for outcome, count in sorted(outcomes.items()):
                runs.add_metric([agent, outcome], count)
        yield runs
        yield CounterMetricFamily(
            PREFIX + "events", "agent events stored by the recorder", value=self.events.events
        )
        tokens = CounterMetricFamily(
            PREFIX + "tokens", "tokens of finished runs", labels=["agent", "kind"]
        )
        for agent, kinds in sorted(self.runs.tokens.items()):
            for kind, count in sorted(kinds.items()):
                tokens.add_metric([agent, kind], count)
        yield tokens
        failures = CounterMetricFamily(
            PREFIX + "failures", "failed runs per failure class", labels=["class"]
        )
        for failure_class, count in sorted(self.runs.failures.items()):
            failures.add_metric([failure_class], count)
        yield failures
        restarts = CounterMetricFamily(
            PREFIX + "process_restarts", "restarts of fleetd's processes", labels=["role"]
        )
        for process in self.status.processes:
            restarts.add_metric([process.role], process.restarts)
        yield restarts

    def _histograms(self) -> Iterator[Metric]:
        durations = HistogramMetricFamily(
            PREFIX + "run_duration_seconds", "agent run time, start to end", labels=["agent"]
        )
        for agent, histogram in sorted(self.runs.durations.items()):
            durations.add_metric([agent], _buckets(histogram), histogram.total)
        yield durations
        dispatch = HistogramMetricFamily(
            PREFIX + "dispatch_latency_seconds", "first attempts: from enqueue to a worker's claim"
        )
        dispatch.add_metric([], _buckets(self.runs.dispatch), self.runs.dispatch.total)
        yield dispatch


def _buckets(histogram: m.Histogram) -> list[tuple[str, float]]:
    cumulative = list(itertools.accumulate(histogram.counts))
    bounds = [*(repr(b) for b in histogram.bounds), "+Inf"]
    return list(zip(bounds, cumulative, strict=True))


async def metrics(request: Request) -> Response:
    web = web_of(request)
    if not web.metrics_open:
        return await _guarded_metrics(request)
    return await _scrape(request)


@guarded()
async def _guarded_metrics(request: Request) -> Response:
    return await _scrape(request)


async def _scrape(request: Request) -> Response:
    control = web_of(request).control
    try:
        status, runs, events = await asyncio.gather(
            control.ask(m.GetStatus()), control.ask(m.GetRunTotals()), control.ask(m.CountEvents())
        )
    except FleetError as exc:  # the fleet cannot answer now: Prometheus marks the scrape failed
        return error_json(503, "unavailable", f"fleetd could not be asked: {exc}")
    assert isinstance(status, m.Status)
    assert isinstance(runs, m.RunTotals)
    assert isinstance(events, m.EventCount)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(status, runs, events, now_us()))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


ROUTES = [Route("/metrics", metrics)]
