"""(e) Resident memory of every fleetd process, idle with 8 workers and after passing events.

VmRSS from /proc/<pid>/status for the supervisor, broker, recorder, each worker (pids from
GetStatus) and multiprocessing's helpers, idle, then after each pass of benchmark (c)'s
ingestion task through the same fleet (3 passes; 2 with --quick). Targets: every worker
<= 40 MB idle and after the events; and no process grows with the events it passed on,
i.e. no growth > 2 MB from the end of the first pass to the end of the last (2 MB over 400,000
events is 5 bytes an event). Growth from idle to the end of the first pass (a cache filling
up to its bound, allocator arenas) is shown and flagged as warm-up; for a worker, the pass in
which it first ran a task takes the first pass's place (its first run is its warm-up).
Baseline in the same run: a bare interpreter that imports what a worker imports
(`fleetd.worker.process`).
"""

from __future__ import annotations

import subprocess
import time

from bench import ingestion
from bench.common import PYTHON, REPO, Report, clean_env, fleet, fmt, proc_status, pss_kb, say
from tests.support.procs import children, command_line

WORKERS = 8
TARGET_WORKER_MB = 40.0
GROWTH_MB = 2.0  # more than this after events passed on is flagged
SETTLE_SECONDS = 1.5


def run(quick: bool, runs: int) -> Report:
    count = 50_000 if quick else 200_000
    passes_n = 2 if quick else 3
    report = Report(
        "memory", f"RSS per process, {WORKERS} idle workers, then {count:,} events x{passes_n}"
    )
    with fleet(WORKERS, "memory") as f:
        time.sleep(SETTLE_SECONDS)
        status = f.status()
        procs = [("supervisor", status.pid)] + [(p.role, p.pid) for p in status.processes]
        procs += [(f"({name})", pid) for name, pid in _helpers(status.pid, procs)]
        idle = _sample(procs)
        passes = []
        first_busy: dict[str, int] = {}  # a worker's role -> the pass it first ran a task in
        for index in range(passes_n):
            ingestion.run_once(f, count)
            time.sleep(SETTLE_SECONDS)
            passes.append(_sample(procs))
            for role in _ran_on(f):
                first_busy.setdefault(role, index)
            say(f"  memory: pass {index + 1} of {count:,} events done")
        busy = set(first_busy)
    floor = _import_floor()
    rows = []
    worker_max = 0.0
    any_max = ("", 0.0)
    grown = []
    limit_kb = GROWTH_MB * 1024
    for role, pid in procs:
        # A worker's warm-up is its first run, in whichever pass that came: growth counts
        # from the end of that pass (one that first ran in the last pass shows none).
        settled = first_busy.get(role, 0)
        before, first, last = idle[pid], passes[settled][pid], passes[-1][pid]
        warmup = first["VmRSS"] - before["VmRSS"]
        growth = last["VmRSS"] - first["VmRSS"]
        flag = ""
        if warmup > limit_kb:
            flag = "warm-up"
        if growth > limit_kb:
            flag = "GROWS WITH EVENTS"
            grown.append((role, growth / 1024))
        peak = max(p[pid]["VmRSS"] for p in [idle, *passes]) / 1024
        if role.startswith("worker"):
            worker_max = max(worker_max, last["VmRSS"] / 1024)
        if peak > any_max[1]:
            any_max = (role, peak)
        ran = " *" if role in busy else ""
        rows.append(
            (
                role + ran,
                pid,
                _mb(before["VmRSS"]),
                *(_mb(p[pid]["VmRSS"]) for p in passes),
                f"{warmup / 1024:+.1f}",
                f"{growth / 1024:+.1f}",
                f"{_mb(before.get('RssAnon', 0))}/{_mb(last.get('RssAnon', 0))}",
                f"{_mb(before.get('RssShmem', 0))}/{_mb(last.get('RssShmem', 0))}",
                _mb(last.get("Pss", 0)),
                flag,
            )
        )
    worker_idle = max(idle[pid]["VmRSS"] for role, pid in procs if role.startswith("worker"))
    report.check(
        "largest worker RSS, idle",
        worker_idle / 1024,
        "MB",
        f"<= {TARGET_WORKER_MB:g} MB",
        worker_idle / 1024 <= TARGET_WORKER_MB,
        digits=1,
    )
    report.check(
        "largest worker RSS, after events",
        worker_max,
        "MB",
        f"<= {TARGET_WORKER_MB:g} MB",
        worker_max <= TARGET_WORKER_MB,
        digits=1,
    )
    report.check(
        f"processes grown > {GROWTH_MB:g} MB after warm-up, to pass {passes_n}",
        len(grown),
        "",
        "0",
        not grown,
        digits=0,
    )
    report.check(
        f"largest fleetd process RSS, any time ({any_max[0]})",
        any_max[1],
        "MB",
        f"<= {TARGET_WORKER_MB:g} MB",
        any_max[1] <= TARGET_WORKER_MB,
        digits=1,
    )
    report.check(
        "baseline: python + import fleetd.worker.process", floor / 1024, "MB", "", None, digits=1
    )
    report.extra_tables.append(
        (
            (
                "process",
                "pid",
                "idle MB",
                *(f"pass{i + 1} MB" for i in range(passes_n)),
                "warm-up",
                f"then ->{passes_n}",
                "anon idle/last",
                "shmem idle/last",
                "PSS MB",
                "flag",
            ),
            rows,
        )
    )
    report.notes.append(
        "* = ran an ingestion task; warm-up = idle to the end of pass 1 (for a worker, of the "
        "pass it first ran a task in), then = from there to the last pass; anon = RssAnon "
        "(private heap), shmem = RssShmem (e.g. SQLite's WAL index), idle/last pass; "
        "PSS = proportional share after the last pass "
        "(pages shared with the fork server split among sharers)"
    )
    report.notes.append(
        f"ratio largest worker / import floor: {fmt(worker_max * 1024 / floor)}x"
        + (f"; grown: {', '.join(f'{r} {g:+.1f} MB' for r, g in grown)}" if grown else "")
    )
    return report


def _mb(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def _sample(procs: list[tuple[str, int]]) -> dict[int, dict[str, int]]:
    out = {}
    for _, pid in procs:
        fields = proc_status(pid)
        fields["Pss"] = pss_kb(pid) or 0
        out[pid] = fields
    return out


def _helpers(supervisor: int, known: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """multiprocessing's fork server and resource tracker: children of the supervisor."""
    pids = {pid for _, pid in known}
    found = []
    for pid in children(supervisor):
        if pid in pids:
            continue
        cmdline = command_line(pid)
        name = (
            "forkserver"
            if "forkserver" in cmdline
            else ("resource_tracker" if "resource_tracker" in cmdline else "child")
        )
        found.append((name, pid))
    return found


def _ran_on(f) -> set[str]:
    """Roles of the workers that ran the ingestion tasks."""
    conn = f.queue_db()
    try:
        workers = {w for (w,) in conn.execute("SELECT DISTINCT worker FROM executions") if w}
    finally:
        conn.close()
    return {p.role for p in f.status().processes if p.worker in workers}


def _import_floor() -> int:
    # The worker's own imports already hold psutil; its RSS is VmRSS (from statm).
    code = "import fleetd.worker.process, psutil; print(psutil.Process().memory_info().rss // 1024)"
    out = subprocess.run(
        [PYTHON, "-c", code], env=clean_env(), cwd=REPO, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())
