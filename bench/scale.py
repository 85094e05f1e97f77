"""(f) Scale stays flat: the same figures with 100,000 tasks queued and with 64 workers.

Three fleets, one after another, measured the same way: `empty` (2 workers, nothing queued:
the baseline), `queued` (2 workers, 100,000 no-op tasks queued) and `wide` (64 workers,
nothing queued). In each:
1. every worker is given a `sleep` task, so what is enqueued next stays queued: no run
   competes with the measurements and the queued fleet's queue stays at 100,000;
2. queued fleet only: 100,000 no-op tasks enqueued in batches of 500 (time shown);
3. 50 no-op tasks enqueued (a full page for `list` in every fleet), then per run:
   `fleetctl status` and `fleetctl list` run as a user runs them (wall time), and the
   GetStatus and ListTasks round trips from this process (the daemon's own share, without
   the interpreter's start-up), beside them the CPU time all fleetd processes spent per
   request (no target; the load inflates it much less than wall time); after all latency
   runs, per run the enqueue rate: 2,000 tasks in batches of 500, and 200 tasks one per
   request (as `fleetctl enqueue` sends them);
4. memory: VmRSS of each fleetd process, after the enqueues;
5. throughput: the sleepers are cancelled and the workers run the queue from its head
   (FIFO); after 100 warm-up tasks, each run is the next 2,000: rate = 2,000 / (last
   `finished_at` of the previous window -> last `finished_at` of this one), from queue.db.
   The empty fleet's queue then holds only step 3's tasks (50 + runs x 2,200), the queued one's
   100,000 more in front of them.
Target: no figure of `queued` or `wide` worse than 2x the empty fleet's, measured in the same
run (rates >= half, times and memory <= double). --quick: 20,000 queued, 16 workers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.common import (
    FLEETCTL,
    BenchFleet,
    CpuMeter,
    Report,
    fleet_pids,
    fmt,
    load,
    median,
    proc_status,
    say,
    timed,
    timed_run,
)
from shared import messages as m
from shared.models import TaskSpec

NOOP = TaskSpec(prompt="", agent="command", argv=["/bin/echo", '{"type":"noop"}'])
SLEEPER = TaskSpec(prompt="", agent="command", argv=["/bin/sleep", "3600"])
BATCH = 500
FACTOR = 2.0  # no figure may be worse than this many times the empty fleet's
WARMUP = 100  # tasks run before the throughput windows
POLL_SECONDS = 0.25
LIST_PAGE = 50  # tasks `fleetctl list` shows by default


@dataclass
class Sizes:
    queued: int
    wide: int
    enqueue: int  # tasks per run in batches of BATCH
    single: int  # tasks per run, one per request
    window: int  # tasks per throughput run
    ctl_calls: int  # fleetctl invocations per run and command
    round_trips: int  # in-process requests per run and kind


@dataclass
class Figures:
    """One fleet's measurements: per-run values by metric, and RSS (MB) by process role."""

    runs: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, value: float) -> None:
        self.runs.setdefault(metric, []).append(value)


# metric -> (unit, higher is better, digits); a target of at most FACTOR x the empty fleet's
METRICS = {
    "enqueue rate, batches of 500": ("tasks/s", True, 0),
    "enqueue rate, one task per request": ("tasks/s", True, 0),
    "fleetctl status wall, median": ("ms", False, 1),
    "fleetctl list wall, median": ("ms", False, 1),
    "GetStatus round trip, median": ("ms", False, 2),
    "ListTasks round trip, median": ("ms", False, 2),
    "throughput (queue head, steady state)": ("tasks/s", True, 0),
}
# shown beside the round trips, no target: fleetd's CPU time per request (every fleetd process),
# which the shared machine's load inflates much less than the wall time
CPU_METRICS = {
    "GetStatus fleetd CPU per request": ("ms", False, 2),
    "ListTasks fleetd CPU per request": ("ms", False, 2),
}
_THROUGHPUT = "throughput (queue head, steady state)"
MEMORY = ("supervisor", "broker", "recorder", "largest worker")


def run(quick: bool, runs: int) -> Report:
    sizes = (
        Sizes(20_000, 16, 500, 100, 500, 5, 100)
        if quick
        else Sizes(100_000, 64, 2_000, 200, 2_000, 10, 300)
    )
    conditions = {
        "empty": (2, 0),
        f"{sizes.queued:,} queued": (2, sizes.queued),
        f"{sizes.wide} workers": (sizes.wide, 0),
    }
    report = Report(
        "scale",
        f"empty fleet (2 workers) vs {sizes.queued:,} tasks queued vs {sizes.wide} workers",
    )
    results: dict[str, Figures] = {}
    for name, (workers, queued) in conditions.items():
        before = load()
        say(f"  scale: {name} ({workers} workers) ...")
        results[name] = _measure(name, workers, queued, sizes, runs)
        report.notes.append(f"{name}: load before {before}; after {load()}")
        report.notes += [f"{name}: {note}" for note in results[name].notes]
    _checks(report, results)
    return report


def _checks(report: Report, results: dict[str, Figures]) -> None:
    names = list(results)
    base = results[names[0]]
    for metric, (unit, higher, digits) in METRICS.items():
        reference = median(base.runs[metric])
        report.check(
            f"{metric}: {names[0]}", reference, unit, "baseline", None, base.runs[metric], digits
        )
        for name in names[1:]:
            values = results[name].runs[metric]
            value = median(values)
            if higher:
                bound, passed = reference / FACTOR, value >= reference / FACTOR
                target = f">= {fmt(bound, digits)} (1/{FACTOR:g} baseline)"
            else:
                bound, passed = reference * FACTOR, value <= reference * FACTOR
                target = f"<= {fmt(bound, digits)} ({FACTOR:g}x baseline)"
            report.check(f"{metric}: {name}", value, unit, target, passed, values, digits)
    for metric, (unit, _, digits) in CPU_METRICS.items():
        for name in names:
            values = results[name].runs[metric]
            report.check(f"{metric}: {name}", median(values), unit, "", None, values, digits)
    for role in MEMORY:
        reference = base.rss[role]
        report.check(f"RSS {role}: {names[0]}", reference, "MB", "baseline", None, digits=1)
        for name in names[1:]:
            value = results[name].rss[role]
            bound = reference * FACTOR
            report.check(
                f"RSS {role}: {name}",
                value,
                "MB",
                f"<= {fmt(bound, 1)} ({FACTOR:g}x baseline)",
                value <= bound,
                digits=1,
            )
    ratios = []
    for name in names[1:]:
        for metric, (_, higher, _) in METRICS.items():
            ref, value = median(base.runs[metric]), median(results[name].runs[metric])
            ratios.append((ref / value if higher else value / ref, f"{metric}: {name}"))
        ratios += [(results[name].rss[r] / base.rss[r], f"RSS {r}: {name}") for r in MEMORY]
    worst, what = max(ratios)
    report.notes.append(f"worst ratio to the empty fleet: {fmt(worst)}x ({what})")


def _measure(name: str, workers: int, queued: int, sizes: Sizes, runs: int) -> Figures:
    figures = Figures()
    f = BenchFleet(workers, "scale-" + name.split()[-1])
    try:
        f.start(wait=False)
        started = time.monotonic()
        f.wait_ready(timeout=60.0 + 3.0 * workers, idle=workers)
        figures.notes.append(f"{workers} workers idle after {time.monotonic() - started:.1f} s")
        sleepers = _occupy(f, workers)
        noops: list[int] = []
        if queued:
            begun = time.perf_counter()
            for offset in range(0, queued, BATCH):
                noops += f.enqueue_specs([NOOP] * min(BATCH, queued - offset))
            took = time.perf_counter() - begun
            figures.notes.append(
                f"{queued:,} tasks enqueued in {took:.1f} s ({queued / took:,.0f} tasks/s)"
            )
        # `list` shows 50 tasks: enough queued for a full page in every fleet, so that all
        # three encode as much; the latencies come before the enqueue runs fill the queue,
        # so the empty fleet holds 52 tasks while they are measured.
        noops += f.enqueue_specs([NOOP] * LIST_PAGE)
        for _ in range(runs):
            _latencies(f, sizes, figures)
        for index in range(runs):
            noops += _enqueue_rates(f, sizes, figures)
            say(f"  scale {name} run {index + 1}: {_last(figures)}")
        figures.rss = _memory(f)
        for task in sleepers:
            f.request(m.CancelTask(task=task))
        _throughput(f, noops, sizes.window, runs, figures)
        say(f"  scale {name} throughput: {fmt(median(figures.runs[_THROUGHPUT]), 0)} tasks/s")
    finally:
        f.close()
    return figures


def _last(figures: Figures) -> str:
    return ", ".join(f"{k.removesuffix(', median')} {fmt(v[-1])}" for k, v in figures.runs.items())


def _occupy(f: BenchFleet, workers: int) -> list[int]:
    """A `sleep` task on every worker, so that everything enqueued later stays queued."""
    ids = f.enqueue_specs([SLEEPER] * workers)
    deadline = time.monotonic() + 60.0 + workers
    while sum(w.state == "busy" for w in f.status().workers) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all {workers} workers took a sleep task; see {f.log_path}")
        time.sleep(0.1)
    return ids


def _latencies(f: BenchFleet, sizes: Sizes, figures: Figures) -> None:
    state_dir = ["--state-dir", str(f.state_dir)]
    for command, metric in (("status", "fleetctl status"), ("list", "fleetctl list")):
        argv = [FLEETCTL, *state_dir, command]
        timed_run(argv, f.env)  # warm the page cache
        walls = [timed_run(argv, f.env)[0] for _ in range(sizes.ctl_calls)]
        figures.add(f"{metric} wall, median", median(walls))
    meter = CpuMeter(fleet_pids(f.status()))
    for request, metric in ((m.GetStatus(), "GetStatus"), (m.ListTasks(), "ListTasks")):
        f.request(request)
        meter.start()
        samples = [timed(lambda r=request: f.request(r)) * 1e3 for _ in range(sizes.round_trips)]
        spent = meter.stop()
        spent.pop("agents")  # the sleepers' (nothing: they are still running)
        figures.add(f"{metric} round trip, median", median(samples))
        figures.add(f"{metric} fleetd CPU per request", sum(spent.values()) / len(samples) * 1e3)


def _enqueue_rates(f: BenchFleet, sizes: Sizes, figures: Figures) -> list[int]:
    ids: list[int] = []
    begun = time.perf_counter()
    for offset in range(0, sizes.enqueue, BATCH):
        ids += f.enqueue_specs([NOOP] * min(BATCH, sizes.enqueue - offset))
    figures.add("enqueue rate, batches of 500", sizes.enqueue / (time.perf_counter() - begun))
    begun = time.perf_counter()
    for _ in range(sizes.single):
        ids += f.enqueue_specs([NOOP])
    figures.add("enqueue rate, one task per request", sizes.single / (time.perf_counter() - begun))
    return ids


def _memory(f: BenchFleet) -> dict[str, float]:
    """VmRSS in MB of the supervisor, broker and recorder, and the largest worker's."""
    status = f.status()
    rss = {"supervisor": proc_status(status.pid)["VmRSS"] / 1024, "largest worker": 0.0}
    for proc in status.processes:
        if proc.pid is None:
            continue
        mb = proc_status(proc.pid)["VmRSS"] / 1024
        if proc.role.startswith("worker"):
            rss["largest worker"] = max(rss["largest worker"], mb)
        else:
            rss[proc.role] = mb
    return rss


def _throughput(f: BenchFleet, ids: list[int], window: int, runs: int, figures: Figures) -> None:
    """Steady-state completion rate at the queue's head: `runs` windows of `window` tasks."""
    needed = WARMUP + window * runs
    if len(ids) < needed:
        raise RuntimeError(f"only {len(ids)} tasks queued; the throughput runs need {needed}")
    previous = _wait_done(f, ids[:WARMUP])
    for index in range(runs):
        lo = WARMUP + index * window
        last = _wait_done(f, ids[lo : lo + window])
        figures.add(_THROUGHPUT, window / ((last - previous) / 1e6))
        previous = last


def _wait_done(f: BenchFleet, ids: list[int], timeout: float = 900.0) -> int:
    """Until every task in `ids` succeeded; the latest `finished_at` among them (us)."""
    lo, hi = min(ids), max(ids)
    deadline = time.monotonic() + timeout
    conn = f.queue_db()
    try:
        while True:
            total, done, ok, last = conn.execute(
                "SELECT COUNT(*), COUNT(finished_at), SUM(state = 'succeeded'), MAX(finished_at)"
                " FROM tasks WHERE id BETWEEN ? AND ?",
                (lo, hi),
            ).fetchone()
            if done == total:
                if ok != total:
                    raise RuntimeError(f"{total - ok} scale task(s) failed; see {f.log_path}")
                return last
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {total} tasks done after {timeout:g} s")
            time.sleep(POLL_SECONDS)
    finally:
        conn.close()
