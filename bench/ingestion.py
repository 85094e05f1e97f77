"""(c) Ingestion: one task whose agent prints N small JSON lines as fast as it can.

Rate = N / (agent start -> task finished_at), finished_at being set only after the recorder
sealed the stream (every event stored). events.db must then hold exactly seqs 1..N.
Baselines in the same run: the generator read through a pipe by this process (what the agent
can produce), and N rows executemany'd into the same events schema (what SQLite can store).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import apsw

from bench.common import PYTHON, Report, fleet, fmt, median, say
from fleetd.eventlog import MIGRATIONS
from shared.models import TaskSpec

LINE = b'{"type":"x","n":1}\n'
TARGET = 50_000
AIM = 150_000


def generator_argv(count: int) -> list[str]:
    """An agent that writes `count` lines from one pre-built buffer, at C speed."""
    code = f"import sys; sys.stdout.buffer.write({LINE!r} * {count})"
    return [PYTHON, "-c", code]


def run(quick: bool, runs: int) -> Report:
    count = 50_000 if quick else 200_000
    report = Report("ingestion", f"{count:,} JSON lines from one command task, 2 workers")
    rates, sealed_rates, pipe_rates, sqlite_rates = [], [], [], []
    with fleet(2, "ingestion") as f:
        for index in range(runs):
            pipe_rates.append(_pipe_floor(count))
            sqlite_rates.append(_sqlite_floor(count))
            to_finish, to_seal = run_once(f, count)
            rates.append(count / to_finish)
            sealed_rates.append(count / to_seal)
            say(f"  ingestion run {index + 1}: {rates[-1]:,.0f} events/s")
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
        f"every run verified: exactly {count:,} events, seqs 1..{count:,}"
    )
    return report


def run_once(f, count: int) -> tuple[float, float]:
    """Run the generator task on fleet `f`; (seconds to finished_at, seconds to sealed_at)."""
    spec = TaskSpec(prompt="", agent="command", argv=generator_argv(count))
    (task,) = f.enqueue([spec])
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
    events = f.events_db()
    try:
        n, low, high, distinct = events.execute(
            "SELECT COUNT(*), MIN(seq), MAX(seq), COUNT(DISTINCT seq) FROM events"
            " WHERE execution_id = ?",
            (execution,),
        ).fetchone()
        (sealed,) = events.execute(
            "SELECT sealed_at FROM streams WHERE execution_id = ?", (execution,)
        ).fetchone()
    finally:
        events.close()
    if (n, low, high, distinct) != (count, 1, count, count):
        raise RuntimeError(
            f"execution {execution}: {n} events, seqs {low}..{high} ({distinct} distinct); "
            f"expected exactly {count} with seqs 1..{count}"
        )
    return (finished - started) / 1e6, (sealed - started) / 1e6


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
        payload = LINE.rstrip(b"\n")
        ts = time.time_ns() // 1000
        start = time.perf_counter()
        for offset in range(0, count, 20_000):  # the recorder's default batch_max
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO events (execution_id, seq, ts, type, flags, payload)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    (1, seq, ts, "x", 0, payload)
                    for seq in range(offset + 1, min(count, offset + 20_000) + 1)
                ],
            )
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
    return count / elapsed
