"""(b) Throughput: no-op command tasks enqueued in batches, run by 2 workers.

Rate = tasks / (client wall clock just before the first Enqueue is sent -> the last of the
tasks' `finished_at` in queue.db, set by the broker when the worker reports the run, after
its event stream was sealed). Completion is polled slowly (GetStatus every 250 ms) so that
the poll does not load the broker; the end time comes from the store, not from the poll.
Also shown: CPU time per task, fleet (every fleetd process plus the agents its workers
reaped) and floor (this process plus its children). Their ratio, floor CPU / fleet CPU, is
the rate ratio a CPU-bound 2-core machine with nothing else running would give; the
measured ratio is what this machine gave, with its load, in wall-clock time.
Floor: the same argv spawned directly from this process on 2 threads (Popen + communicate),
same total, measured in the same run right before each fleet run. The ratio fleet/floor is
the share of the raw spawn rate the fleet keeps; the field's, measured the same way, come from
the last `../shared/peerbench` run (`bench.peers`), shown with its date.
"""

from __future__ import annotations

import resource
import subprocess
import threading
import time

from bench import peers
from bench.common import CpuMeter, Report, cpu_text, fleet, fleet_pids, fmt, median, say
from shared.models import TaskSpec

ARGV = ["/bin/echo", '{"type":"noop"}']
BATCH = 500
TARGET_RATIO = 0.5
AIM_RATIO = 0.7
POLL_SECONDS = 0.25


def run(quick: bool, runs: int) -> Report:
    total = 500 if quick else 2000
    report = Report("throughput", f"{total} no-op command tasks, 2 workers, batches of {BATCH}")
    fleet_rates, floor_rates, ratios = [], [], []
    fleet_cpus, floor_cpus = [], []
    with fleet(2, "throughput") as f:
        meter = CpuMeter(fleet_pids(f.status()))
        _fleet_run(f, 100)  # warm-up: first forks, page cache, SQLite files
        for index in range(runs):
            rate, floor_cpu = _floor(total)
            floor_rates.append(rate)
            floor_cpus.append(floor_cpu / total * 1e3)
            meter.start()
            fleet_rates.append(_fleet_run(f, total))
            cpu = meter.stop()
            fleet_cpus.append(sum(cpu.values()) / total * 1e3)
            ratios.append(fleet_rates[-1] / floor_rates[-1])
            say(
                f"  throughput run {index + 1}: fleet {fleet_rates[-1]:.0f}/s, "
                f"floor {floor_rates[-1]:.0f}/s"
            )
            report.notes.append(f"run {index + 1} fleetd CPU: {cpu_text(cpu, total, 'task')}")
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
    report.check("CPU per task, fleet (+agents)", median(fleet_cpus), "ms", "", None, fleet_cpus)
    report.check("CPU per task, floor (+agents)", median(floor_cpus), "ms", "", None, floor_cpus)
    cpu_ratios = [fl / fc for fl, fc in zip(floor_cpus, fleet_cpus, strict=True)]
    report.check("CPU ratio floor/fleet", median(cpu_ratios), "", "", None, cpu_ratios)
    if ratio < AIM_RATIO:
        report.notes.append(f"below the aim of {AIM_RATIO:g} ({fmt(ratio)})")
    _peers(report)
    return report


def _peers(report: Report) -> None:
    """Ours against Huey's in the last peerbench run (the issue's target), and the field's."""
    last = peers.last_run()
    ours, huey = (last.ours(), last.peer("Huey")) if last is not None else (None, None)
    if ours is not None and huey is not None:
        report.check(
            "ratio, agent-fleet / Huey (last peerbench run)",
            ours / huey,
            "",
            "> 1",
            ours > huey,
            [],
        )
    report.notes.append(peers.summary(last))


def _fleet_run(f, total: int) -> float:
    """Enqueue `total` tasks in batches; tasks/s until GetStatus counts them all succeeded."""
    before = f.status().counts
    base_ok = before.get("succeeded", 0)
    base_failed = sum(before.get(s, 0) for s in ("failed", "cancelled", "timed_out"))
    spec = TaskSpec(prompt="", agent="command", argv=ARGV)
    start = time.time_ns() // 1000
    ids: list[int] = []
    for offset in range(0, total, BATCH):
        ids += f.enqueue_specs([spec] * min(BATCH, total - offset))
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
    conn = f.queue_db()
    try:
        done, last = conn.execute(
            "SELECT COUNT(*), MAX(finished_at) FROM tasks"
            " WHERE id BETWEEN ? AND ? AND state = 'succeeded'",
            (min(ids), max(ids)),
        ).fetchone()
    finally:
        conn.close()
    if done != total or len(ids) != total:
        raise RuntimeError(f"{done} of {total} throughput tasks succeeded")
    return total / ((last - start) / 1e6)


def _floor(total: int) -> tuple[float, float]:
    """The same argv spawned directly, 2 threads, `total` processes in all.

    Returns tasks/s and the CPU seconds spent (this process and its children)."""

    def spawn(count: int) -> None:
        for _ in range(count):
            proc = subprocess.Popen(ARGV, stdout=subprocess.PIPE)
            proc.communicate()

    threads = [
        threading.Thread(target=spawn, args=(total // 2 + (total % 2 if i == 0 else 0),))
        for i in range(2)
    ]
    before = _cpu_self_and_children()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return total / elapsed, _cpu_self_and_children() - before


def _cpu_self_and_children() -> float:
    spent = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        spent += usage.ru_utime + usage.ru_stime
    return spent
