"""What every benchmark shares: a real fleetd in a short temp dir, statistics, tables, /proc."""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import psutil
import zmq

from shared import messages as m
from shared.models import TERMINAL_STATES, TaskSpec
from tests.support.fleet import Fleet
from tests.support.procs import cpu_seconds

PYTHON = sys.executable
FLEETCTL = str(Path(PYTHON).parent / "fleetctl")  # the installed entry point, as users run it
REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "bench" / "out"  # fleetd logs of the last run (git-ignored)
# Where the fleets' state directories go: /tmp (the disk) unless BENCH_STATE_ROOT says otherwise
# (e.g. /dev/shm, to see what the filesystem's metadata operations cost).
STATE_ROOT = os.environ.get("BENCH_STATE_ROOT", "/tmp")


# --- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def runs_text(values: Sequence[float], digits: int = 2) -> str:
    return " / ".join(fmt(v, digits) for v in values)


# --- output ------------------------------------------------------------------------------------


@dataclass
class Check:
    """One measured figure against its target."""

    metric: str
    value: float
    unit: str
    target: str
    passed: bool | None  # None: informational, no target
    runs: Sequence[float] = ()
    digits: int = 2


@dataclass
class Report:
    """What one benchmark prints: its checks, then baseline/context lines."""

    name: str
    title: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra_tables: list[tuple[Sequence[str], list[Sequence[Any]]]] = field(default_factory=list)

    def check(self, *args: Any, **kwargs: Any) -> Check:
        item = Check(*args, **kwargs)
        self.checks.append(item)
        return item

    @property
    def missed(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    def render(self) -> str:
        lines = [f"== {self.name}: {self.title}"]
        rows = []
        for c in self.checks:
            verdict = "-" if c.passed is None else ("PASS" if c.passed else "MISS")
            rows.append(
                (
                    c.metric,
                    f"{fmt(c.value, c.digits)} {c.unit}".strip(),
                    c.target or "-",
                    verdict,
                    runs_text(c.runs, c.digits) if c.runs else "",
                )
            )
        lines += table(("metric", "median", "target", "verdict", "per run"), rows)
        for headers, extra in self.extra_tables:
            lines.append("")
            lines += table(headers, extra)
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(h) for h in headers]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = []
    for index, row in enumerate(cells):
        out.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return out


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- a real fleet --------------------------------------------------------------------------------


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The host environment without FLEET_* settings or a user config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["XDG_CONFIG_HOME"] = str(Path(tempfile.gettempdir()) / "fleet-bench-noconfig")
    env.update(extra or {})
    return env


class BenchFleet(Fleet):
    """The tests' `Fleet` with the benchmarks' set-up: a clean environment, a short state dir
    under STATE_ROOT, the log in bench/out, and read-only views of its stores."""

    def __init__(self, workers: int, label: str) -> None:
        self.workers = workers
        self.root = Path(tempfile.mkdtemp(prefix="fb", dir=STATE_ROOT))
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        super().__init__(self.root / "s", clean_env(), OUT_DIR / f"fleetd-{label}.log")
        self.log_path.write_bytes(b"")  # this run's log only

    def start(self, *args: str, wait: bool = True) -> BenchFleet:
        super().start("--workers", str(self.workers), *args, wait=False)
        if wait:
            self.wait_ready(timeout=30.0, idle=self.workers)
        return self

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.root, ignore_errors=True)

    def enqueue_specs(self, specs: list[TaskSpec]) -> list[int]:
        reply = self.request(m.Enqueue(tasks=specs))
        assert isinstance(reply, m.Enqueued), reply
        return reply.ids

    def task_state(self, task: int) -> str:
        reply = self.request(m.ShowTask(task=task))
        assert isinstance(reply, m.TaskDetail)
        return reply.task.state

    def wait_terminal(self, task: int, timeout: float = 120.0, interval: float = 0.05) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.task_state(task)
            if state in TERMINAL_STATES:
                return state
            if time.monotonic() > deadline:
                raise RuntimeError(f"task {task} still {state} after {timeout:g} s")
            time.sleep(interval)

    # stores, read-only

    def queue_db(self) -> apsw.Connection:
        return read_only(self.state_dir / "queue.db")

    def events_db(self) -> apsw.Connection:
        return read_only(self.state_dir / "events.db")


class FeedWaiter:
    """Blocks (no CPU) on the recorder's feed until a task's stream is sealed."""

    def __init__(self, endpoint: str) -> None:
        self.codec = m.FEED
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"t")
        self.sock.connect(endpoint)
        self.sealed: set[int] = set()

    def wait_sealed(self, task: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while task not in self.sealed:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                return False
            while True:
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                message = self.codec.decode(frames[-1])
                if isinstance(message, m.StreamSealed):
                    self.sealed.add(message.task)
        self.sealed.discard(task)
        return True

    def close(self) -> None:
        self.sock.close(0)
        self.context.term()


def read_only(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(5000)
    return conn


@contextlib.contextmanager
def fleet(workers: int, label: str) -> Iterator[BenchFleet]:
    bench_fleet = BenchFleet(workers, label)
    try:
        bench_fleet.start()
        yield bench_fleet
    finally:
        bench_fleet.close()


# --- processes ---------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """Memory fields of /proc/<pid>/status in kB (VmRSS, RssAnon, RssFile, RssShmem)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def pss_kb(pid: int) -> int | None:
    """Proportional set size in kB (shared pages split between their users), or None."""
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).memory_full_info().pss // 1024
    return None


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, CPU ms) of one run of `argv`."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True)
    elapsed = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime) * 1000
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode(errors="replace"))
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}")
    return elapsed, cpu


def load() -> str:
    """The machine's load right now: load averages, CPU pressure, and the share of CPU time
    the hypervisor took since the last reading (the host is shared: on 2026-12-03 it took
    2-33% of both CPUs during single benchmarks, and the ratios moved with it)."""
    text = "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    with contextlib.suppress(OSError):
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        text += f", CPU pressure {some[1]} {some[2]}"
    with contextlib.suppress(OSError, ValueError, IndexError):
        text += ", " + _steal()
    return text


_last_cpu_ticks: list[tuple[int, int]] = []  # (all, stolen) at the last `load()`


def _steal() -> str:
    """CPU time stolen by the host (`steal` in /proc/stat), as a share of all CPU time."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    now = (sum(fields), fields[7])  # user nice system idle iowait irq softirq steal
    since = "since the last reading" if _last_cpu_ticks else "since boot"
    before = _last_cpu_ticks[-1] if _last_cpu_ticks else (0, 0)
    _last_cpu_ticks[:] = [now]
    spent = now[0] - before[0]
    share = 100 * (now[1] - before[1]) / spent if spent > 0 else 0.0
    return f"steal {share:.1f}% {since}"


def fleet_pids(status: m.Status) -> list[tuple[str, int]]:
    """(role, pid) of the supervisor and every child it reports."""
    return [("supervisor", status.pid)] + [(p.role, p.pid) for p in status.processes]


class CpuMeter:
    """CPU seconds each fleetd process spends between `start()` and `stop()`."""

    def __init__(self, procs: list[tuple[str, int]]) -> None:
        self.procs = procs
        self.before: dict[int, float] = {}
        self.spent: dict[str, float] = {}

    def start(self) -> None:
        self.before = {pid: cpu_seconds(pid) for _, pid in self.procs}
        self.agents_before = sum(cpu_seconds(pid, children=True) for _, pid in self._workers())

    def stop(self) -> dict[str, float]:
        """CPU seconds per role, and under "agents" that of the agents the workers reaped."""
        self.spent = {
            role: cpu_seconds(pid) - self.before.get(pid, 0.0) for role, pid in self.procs
        }
        agents = sum(cpu_seconds(pid, children=True) for _, pid in self._workers())
        self.spent["agents"] = agents - self.agents_before
        return self.spent

    def _workers(self) -> list[tuple[str, int]]:
        return [(role, pid) for role, pid in self.procs if role.startswith("worker")]


def cpu_text(spent: dict[str, float], per: float = 0.0, unit: str = "") -> str:
    """`broker 1.20 s, recorder 0.40 s, ...` (roles that used < 10 ms left out)."""
    items = sorted(spent.items(), key=lambda kv: -kv[1])
    parts = []
    for role, seconds in items:
        if seconds < 0.01:
            continue
        each = f" ({seconds / per * 1e6:.0f} us/{unit})" if per else ""
        parts.append(f"{role} {seconds:.2f} s{each}")
    return ", ".join(parts) or "none"


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }
