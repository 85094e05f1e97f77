"""(c) Ingestion: one task whose agent prints N small JSON lines as fast as it can.

Line n is `{"type":"x","n":n}`. Rate = N / (agent start -> task finished_at), finished_at
being set by the broker only after the worker heard the recorder seal the stream, which the
recorder does only after the transaction holding the last event committed (WAL,
synchronous=NORMAL: committed in the WAL, survives any process crash). Every run is then
verified from events.db through a separate read-only connection (so only committed rows are
seen): exactly N events, seq i holding line i byte for byte, type "x", no flags, stream sealed
with last_seq N; so every event is stored exactly once and in order.
Baselines in the same run: the generator read through a pipe by this process (what the agent
can produce), and N rows executemany'd into the same events schema (what SQLite can store).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import apsw

from bench.common import PYTHON, CpuMeter, Report, cpu_text, fleet, fleet_pids, fmt, median, say
from fleetd.recorder.eventlog import MIGRATIONS
from shared.models import TaskSpec

LINE = b'{"type":"x","n":%d}\n'
TARGET = 150_000  # issue 14, item 3 (issue 2 asked for 50,000)
AIM = 200_000


def generator_argv(count: int) -> list[str]:
    """An agent that writes `count` numbered lines from one pre-built buffer, in one write."""
    code = (
        f"import sys; sys.stdout.buffer.write("
        f"b''.join({LINE!r} % n for n in range(1, {count} + 1)))"
    )
    return [PYTHON, "-c", code]


def run(quick: bool, runs: int) -> Report:
    count = 50_000 if quick else 200_000
    report = Report("ingestion", f"{count:,} JSON lines from one command task, 2 workers")
    rates, sealed_rates, pipe_rates, sqlite_rates = [], [], [], []
    with fleet(2, "ingestion") as f:
        meter = CpuMeter(fleet_pids(f.status()))
        for index in range(runs):
            pipe_rates.append(_pipe_floor(count))
            sqlite_rates.append(_sqlite_floor(count))
            meter.start()
            to_finish, to_seal = run_once(f, count)
            cpu = meter.stop()
            rates.append(count / to_finish)
            sealed_rates.append(count / to_seal)
            say(f"  ingestion run {index + 1}: {rates[-1]:,.0f} events/s")
            report.notes.append(f"run {index + 1} fleetd CPU: {cpu_text(cpu, count, 'event')}")
    rate = median(rates)
    report.check(
        "events/s persisted (to finished_at)",
        rate,
        "ev/s",
        f">= {TARGET:,} (aim {AIM:,})",
        rate >= TARGET,
        rates,
        digits=0,
    )
    report.check(
        "events/s to stream sealed", median(sealed_rates), "ev/s", "", None, sealed_rates, digits=0
    )
    report.check(
        "floor: generator via pipe", median(pipe_rates), "ev/s", "", None, pipe_rates, digits=0
    )
    report.check(
        "floor: SQLite executemany", median(sqlite_rates), "ev/s", "", None, sqlite_rates, digits=0
    )
    report.notes.append(
        f"ratio fleet / SQLite floor: {fmt(rate / median(sqlite_rates))}; "
        f"fleet / pipe floor: {fmt(rate / median(pipe_rates))}; "
        f"every run verified from events.db: exactly {count:,} events, seq i = line i"
    )
    return report


def run_once(f, count: int) -> tuple[float, float]:
    """Run the generator task on fleet `f`; (seconds to finished_at, seconds to sealed_at)."""
    return measure(f, enqueue(f, count), count)


def enqueue(f, count: int) -> int:
    """The generator task of `count` lines, enqueued on fleet `f`."""
    spec = TaskSpec(prompt="", agent="command", argv=generator_argv(count))
    (task,) = f.enqueue_specs([spec])
    return task


def measure(f, task: int, count: int) -> tuple[float, float]:
    """Wait for the generator task, verify its events; (to finished_at, to sealed_at)."""
    state = f.wait_terminal(task, timeout=300, interval=0.1)
    if state != "succeeded":
        raise RuntimeError(f"ingestion task {task} ended {state}; see {f.log_path}")
    queue = f.queue_db()
    try:
        execution, started, finished = queue.execute(
            "SELECT id, started_at, finished_at FROM executions WHERE task_id = ?", (task,)
        ).fetchone()
    finally:
        queue.close()
    sealed = verify(f, execution, count)
    return (finished - started) / 1e6, (sealed - started) / 1e6


def verify(f, execution: int, count: int) -> int:
    """Check events.db holds exactly lines 1..count of `execution`, in order; its sealed_at."""
    events = f.events_db()
    try:
        (mode,) = events.execute("PRAGMA journal_mode").fetchone()
        last_seq, sealed = events.execute(
            "SELECT last_seq, sealed_at FROM streams WHERE execution_id = ?", (execution,)
        ).fetchone()
        stored = 0
        for seq, kind, flags, payload in events.execute(
            "SELECT seq, type, flags, payload FROM events WHERE execution_id = ? ORDER BY seq",
            (execution,),
        ):
            stored += 1
            expected = LINE[:-1] % stored
            if (seq, kind, flags, bytes(payload)) != (stored, "x", 0, expected):
                raise RuntimeError(
                    f"execution {execution}: row {stored} is seq {seq} {kind!r} flags {flags} "
                    f"{bytes(payload)[:60]!r}; expected seq {stored} {expected!r}"
                )
    finally:
        events.close()
    if stored != count or last_seq != count or sealed is None or mode.lower() != "wal":
        raise RuntimeError(
            f"execution {execution}: {stored} events stored, last_seq {last_seq}, "
            f"sealed_at {sealed}, journal {mode}; expected {count}, sealed, wal"
        )
    return sealed


def _pipe_floor(count: int) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(generator_argv(count), stdout=subprocess.PIPE)
    lines = 0
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(1 << 20):
        lines += chunk.count(b"\n")
    proc.wait()
    assert lines == count
    return count / (time.perf_counter() - start)


def _sqlite_floor(count: int) -> float:
    with tempfile.TemporaryDirectory(prefix="fbsql", dir="/tmp") as tmp:
        conn = apsw.Connection(str(Path(tmp) / "events.db"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(MIGRATIONS[0])
        ts = time.time_ns() // 1000
        rows = [(1, seq, ts, "x", 0, LINE[:-1] % seq) for seq in range(1, count + 1)]
        start = time.perf_counter()
        for offset in range(0, count, 20_000):  # the recorder's default batch_max
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO events (execution_id, seq, ts, type, flags, payload)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                rows[offset : offset + 20_000],
            )
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
    return count / elapsed
