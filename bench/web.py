"""(g) The dashboard's cost: dispatch throughput and ingestion while a browser follows a
running task's events (the SSE stream the task page opens) and Prometheus scrapes /metrics
every second, against the same fleet with nobody looking.

One fleet with its dashboard on, 3 workers: one runs a chatty task (an event every 50 ms)
the whole time. Runs alternate, quiet then watched, so that a change in the machine's load
falls on both. Throughput: no-op command tasks as in (b), the watcher on the chatty task.
Ingestion: one task printing N lines as in (c), the watcher on that very task (each batch
goes through the web process too). Target: watched / quiet >= 0.95 for both (issue 15).
On a loaded 2-core machine single runs swing by more than 5% either way, so the watched
runs' CPU is shown too: the web process's share of all the fleet's processes' CPU (agents
included), what the watching takes from the fleet on a CPU-bound machine.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import httpx

from bench import ingestion
from bench.common import PYTHON, BenchFleet, CpuMeter, Report, fleet_pids, median, say
from bench.ingestion import run_once
from bench.throughput import _fleet_run
from shared import messages as m
from shared.models import TaskSpec

TARGET = 0.95
SCRAPE_SECONDS = 1.0
CHATTY = [
    PYTHON,
    "-c",
    'import time\nwhile True: print(\'{"type":"tick"}\', flush=True); time.sleep(0.05)',
]


class Watchers:
    """A browser's event stream of one task and a Prometheus scraping /metrics each second,
    on threads, counting what they received."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.stop = threading.Event()
        self.events = self.scrapes = 0
        self.threads: list[threading.Thread] = []

    @contextlib.contextmanager
    def watching(self, task: int) -> Iterator[None]:
        self.stop.clear()
        self.threads = [
            threading.Thread(target=self._follow, args=(task,), daemon=True),
            threading.Thread(target=self._scrape, daemon=True),
        ]
        for thread in self.threads:
            thread.start()
        try:
            yield
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join(10)

    def _follow(self, task: int) -> None:
        """Follow the task's stream as the task page does; a task not yet enqueued (404) is
        asked for again, as a reloading browser would."""
        headers = {"authorization": f"Bearer {self.token}", "accept": "text/event-stream"}
        address = f"{self.url}/api/v1/tasks/{task}/events?view=page"  # as the task page asks
        while not self.stop.is_set():
            with (
                contextlib.suppress(httpx.HTTPError),
                httpx.stream("GET", address, headers=headers, timeout=None) as stream,
            ):
                if stream.status_code == 404:
                    self.stop.wait(0.02)
                    continue
                for line in stream.iter_lines():
                    if line.startswith("id: "):
                        self.events += 1
                    if self.stop.is_set():
                        return
                return

    def _scrape(self) -> None:
        while not self.stop.wait(SCRAPE_SECONDS):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/metrics", timeout=10).status_code == 200:
                    self.scrapes += 1


def run(quick: bool, runs: int) -> Report:
    tasks = 300 if quick else 1000
    lines = 20_000 if quick else 100_000
    report = Report(
        "web", f"dashboard cost: {tasks} no-op tasks and {lines:,} events, quiet vs watched"
    )
    fleet = BenchFleet(3, "web")
    fleet.env["FLEET_WEB_LISTEN"] = "127.0.0.1:0"
    try:
        fleet.start()
        url = (fleet.status().web_url or "").rstrip("/")
        token = (fleet.state_dir / "web-token").read_text().strip()
        watchers = Watchers(url, token)
        (chatty,) = fleet.enqueue_specs([TaskSpec(prompt="", agent="command", argv=CHATTY)])
        meter = CpuMeter(fleet_pids(fleet.status()))
        shares: dict[str, list[float]] = {"throughput": [], "ingestion": []}
        _fleet_run(fleet, 50)  # warm-up
        throughput: dict[str, list[float]] = {"quiet": [], "watched": []}
        ingestion: dict[str, list[float]] = {"quiet": [], "watched": []}
        for index in range(runs):
            throughput["quiet"].append(_fleet_run(fleet, tasks))
            meter.start()
            with watchers.watching(chatty):
                throughput["watched"].append(_fleet_run(fleet, tasks))
            shares["throughput"].append(_web_share(meter.stop()))
            ingestion["quiet"].append(lines / run_once(fleet, lines)[0])
            meter.start()
            ingestion["watched"].append(_watched_ingestion(fleet, watchers, lines))
            shares["ingestion"].append(_web_share(meter.stop()))
            say(
                f"  web run {index + 1}: throughput {throughput['quiet'][-1]:.0f} -> "
                f"{throughput['watched'][-1]:.0f}/s, ingestion {ingestion['quiet'][-1]:,.0f} -> "
                f"{ingestion['watched'][-1]:,.0f} ev/s"
            )
        fleet.request(m.CancelTask(task=chatty))
        for name, figures, unit in (
            ("throughput", throughput, "tasks/s"),
            ("ingestion", ingestion, "ev/s"),
        ):
            ratios = [w / q for q, w in zip(figures["quiet"], figures["watched"], strict=True)]
            report.check(
                f"{name}, quiet",
                median(figures["quiet"]),
                unit,
                "",
                None,
                figures["quiet"],
                digits=0,
            )
            report.check(
                f"{name}, watched",
                median(figures["watched"]),
                unit,
                "",
                None,
                figures["watched"],
                digits=0,
            )
            report.check(
                f"{name} ratio watched/quiet",
                median(ratios),
                "",
                f">= {TARGET:g}",
                median(ratios) >= TARGET,
                ratios,
            )
            share = [100 * x for x in shares[name]]
            report.check(
                f"{name}: web's share of fleet CPU, watched",
                median(share),
                "%",
                "",
                None,
                share,
                digits=1,
            )
        report.notes.append(
            f"the watchers received {watchers.events:,} SSE messages (batches of events) "
            f"and {watchers.scrapes} scrapes"
        )
    finally:
        fleet.close()
    return report


def _web_share(spent: dict[str, float]) -> float:
    total = sum(spent.values())
    return spent.get("web", 0.0) / total if total else 0.0


def _watched_ingestion(fleet: BenchFleet, watchers: Watchers, lines: int) -> float:
    """The ingestion run with the watcher on its task from the moment it is enqueued."""
    task = ingestion.enqueue(fleet, lines)
    with watchers.watching(task):
        to_finish, _ = ingestion.measure(fleet, task, lines)
    return lines / to_finish
