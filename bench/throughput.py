"""(b) Throughput: no-op command tasks enqueued in batches, run by 2 workers.

Rate = tasks / (first Enqueue sent -> GetStatus shows them all succeeded). Floor: the same
argv spawned directly from this process on 2 threads (Popen + communicate), same total.
"""

from __future__ import annotations

import subprocess
import threading
import time

from bench.common import Report, fleet, fmt, median, say
from shared.models import TaskSpec

ARGV = ["/bin/echo", '{"type":"noop"}']
BATCH = 500
TARGET_RATIO = 0.5
AIM_RATIO = 0.7
POLL_SECONDS = 0.01


def run(quick: bool, runs: int) -> Report:
    total = 500 if quick else 2000
    report = Report("throughput", f"{total} no-op command tasks, 2 workers, batches of {BATCH}")
    fleet_rates, floor_rates, ratios = [], [], []
    with fleet(2, "throughput") as f:
        _fleet_run(f, 100)  # warm-up: first forks, page cache, SQLite files
        for index in range(runs):
            floor_rates.append(_floor(total))
            fleet_rates.append(_fleet_run(f, total))
            ratios.append(fleet_rates[-1] / floor_rates[-1])
            say(
                f"  throughput run {index + 1}: fleet {fleet_rates[-1]:.0f}/s, "
                f"floor {floor_rates[-1]:.0f}/s"
            )
    ratio = median(ratios)
    report.check("fleet", median(fleet_rates), "tasks/s", "", None, fleet_rates, digits=0)
    report.check(
        "floor (Popen, 2 threads)", median(floor_rates), "tasks/s", "", None, floor_rates, digits=0
    )
    report.check(
        "ratio fleet/floor",
        ratio,
        "",
        f">= {TARGET_RATIO:g} (aim {AIM_RATIO:g})",
        ratio >= TARGET_RATIO,
        ratios,
    )
    if ratio < AIM_RATIO:
        report.notes.append(f"below the aim of {AIM_RATIO:g} ({fmt(ratio)})")
    return report


def _fleet_run(f, total: int) -> float:
    """Enqueue `total` tasks in batches; tasks/s until GetStatus counts them all succeeded."""
    before = f.status().counts
    base_ok = before.get("succeeded", 0)
    base_failed = sum(before.get(s, 0) for s in ("failed", "cancelled", "timed_out"))
    spec = TaskSpec(prompt="", agent="command", argv=ARGV)
    start = time.perf_counter()
    for offset in range(0, total, BATCH):
        f.enqueue([spec] * min(BATCH, total - offset))
    deadline = time.monotonic() + 600
    while True:
        counts = f.status().counts
        done = counts.get("succeeded", 0) - base_ok
        if done >= total:
            break
        failed = sum(counts.get(s, 0) for s in ("failed", "cancelled", "timed_out")) - base_failed
        if failed:
            raise RuntimeError(f"{failed} throughput task(s) did not succeed; see {f.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {total} tasks done after 600 s")
        time.sleep(POLL_SECONDS)
    return total / (time.perf_counter() - start)


def _floor(total: int) -> float:
    """The same argv spawned directly, 2 threads, `total` processes in all."""

    def spawn(count: int) -> None:
        for _ in range(count):
            proc = subprocess.Popen(ARGV, stdout=subprocess.PIPE)
            proc.communicate()

    threads = [
        threading.Thread(target=spawn, args=(total // 2 + (total % 2 if i == 0 else 0),))
        for i in range(2)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return total / (time.perf_counter() - start)
