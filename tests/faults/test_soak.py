"""Fault injection: many tasks while children and the whole daemon are killed at random moments
(and the fleet is now and then stopped cleanly and started again).

Afterwards, the databases alone must prove that nothing was lost: every task ended exactly
once (or is still queued), every stream is gap-free and equal to what its agent printed (the
test agents keep their own copy), and no agent process is left.

CI runs a small soak; `make soak` a long one. Knobs (not `FLEET_*`: fleetd rejects unknown
variables of its own prefix): AGENT_FLEET_SOAK_TASKS, AGENT_FLEET_SOAK_SEED.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import pytest

from tests.support.fleet import Fleet, short_tempdir, wait_for
from tests.support.procs import processes_under, session_members, title

TASKS = int(os.environ.get("AGENT_FLEET_SOAK_TASKS", "200"))
SEED = int(os.environ.get("AGENT_FLEET_SOAK_SEED", str(random.randrange(1 << 30))))
WORKERS = 3
MAX_ATTEMPTS = 5
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
# Outcomes whose agent ran to its end: everything it printed must be stored.
COMPLETE = ("succeeded", "failed", "timed_out")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240 + TASKS)]

# Prints $2 numbered lines tagged with a fresh run id, each appended to its own copy first
# (so the copy is never shorter than what reached stdout), then exits with $4 or hangs (until
# its timeout; a hanging agent that fleetd failed to end is still there when the test looks).
AGENT = r"""
read -r id < /proc/sys/kernel/random/uuid
i=1
while [ "$i" -le "$2" ]; do
  line="{\"run\":\"$id\",\"n\":$i}"
  echo "$line" >> "$1/$id"
  echo "$line"
  [ $((i % 8)) -eq 0 ] && sleep "$3"
  i=$((i + 1))
done
[ "$4" = hang ] && exec sleep 600
exit "$4"
"""


def _task_specs(rng: random.Random, copies: Path) -> list[dict[str, object]]:
    specs: list[dict[str, object]] = []
    for index in range(TASKS):
        ending = rng.choices(["0", "3", "hang"], weights=[75, 10, 15])[0]
        lines = rng.randint(1, 60)
        argv = ["sh", "-c", AGENT, "soak", str(copies), str(lines), "0.02", ending]
        spec: dict[str, object] = {"prompt": f"soak {index}", "agent": "command", "argv": argv}
        if ending == "hang":
            spec["timeout"] = 1.0
        specs.append(spec)
    return specs


@dataclass
class Chaos:
    """Kills parts of the fleet (or stops it) at random moments; counts what it did."""

    fleet: Fleet
    rng: random.Random
    plan: list[str]
    killed: Counter[str] = field(default_factory=Counter)

    def role_pids(self) -> dict[str, int]:
        """The fleet's children by role, from their process titles (works with no broker)."""
        found = {}
        for pid in session_members(self.fleet.pid):
            name = title(pid) or ""
            if name.startswith("fleetd: ") and name != "fleetd: supervisor":
                found[name.removeprefix("fleetd: ")] = pid
        return found

    def strike(self) -> None:
        victim = self.plan.pop()
        if victim == "daemon":
            self.fleet.kill_all()
            self.fleet.start()
            self.killed[victim] += 1
            return
        if victim == "stop":  # a clean stop in the middle of the mess, then a new start
            os.kill(self.fleet.pid, signal.SIGTERM)
            assert self.fleet.wait_exit(90) == 0, self.fleet.log()[-3000:]
            self.fleet.start()
            self.killed[victim] += 1
            return
        roles = [r for r in self.role_pids().items() if r[0].startswith(victim)]
        if roles:
            _, pid = self.rng.choice(roles)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                self.killed[victim] += 1


def _plan(rng: random.Random) -> list[str]:
    kills = max(12, TASKS // 8)
    daemon = max(2, TASKS // 80)
    plan = ["daemon"] * daemon + ["broker", "recorder"] * max(2, kills // 6)
    plan += ["worker"] * (kills - len(plan) + daemon)
    plan += ["stop"] * max(1, TASKS // 100)
    rng.shuffle(plan)
    return plan


def _unfinished(state_dir: Path) -> int:
    """Tasks not yet in a terminal state (-1: unknown, the broker is recovering its WAL)."""
    try:
        with contextlib.closing(_readonly(state_dir / "queue.db")) as db:
            marks = ",".join("?" * len(TERMINAL))
            row = db.execute(f"SELECT COUNT(*) FROM tasks WHERE state NOT IN ({marks})", TERMINAL)
            return int(row.fetchone()[0])
    except apsw.BusyError:
        return -1


def _readonly(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(5000)
    return conn


def _check_tasks(queue: apsw.Connection) -> Counter[str]:
    """Every task ended exactly once in a terminal state, or is queued; attempts add up."""
    states: Counter[str] = Counter()
    executions: dict[int, list[str]] = {}
    for task, outcome in queue.execute("SELECT task_id, outcome FROM executions ORDER BY id"):
        executions.setdefault(task, []).append(outcome)
    tasks = queue.execute("SELECT id, state, attempts, max_attempts FROM tasks").fetchall()
    assert len(tasks) == TASKS
    for task, state, attempts, max_attempts in tasks:
        outcomes = executions.get(task, [])
        states[state] += 1
        assert state in (*TERMINAL, "queued"), f"task {task} left {state}: {outcomes}"
        assert "running" not in outcomes, f"task {task}: an execution still running"
        ended = [o for o in outcomes if o in TERMINAL]
        assert attempts == len([o for o in outcomes if o != "interrupted"]), (task, outcomes)
        if state == "queued":
            assert not ended, f"task {task} is queued but ended: {outcomes}"
        elif ended:
            assert ended == [state] and outcomes[-1] == state, f"task {task}: {outcomes}"
        else:  # out of attempts: every attempt was lost
            assert state == "failed" and attempts == max_attempts, f"task {task}: {outcomes}"
            states["failed, out of attempts"] += 1
    return states


def _check_events(queue: apsw.Connection, events: apsw.Connection, copies: Path) -> int:
    """Every stream gap-free and equal to its agent's own copy (a prefix if the run was cut)."""
    outcomes = dict(queue.execute("SELECT id, outcome FROM executions").fetchall())
    streams = events.execute("SELECT execution_id, last_seq, sealed_at FROM streams").fetchall()
    checked = 0
    for execution, last_seq, sealed_at in streams:
        rows = events.execute(
            "SELECT seq, payload FROM events WHERE execution_id = ? ORDER BY seq", (execution,)
        ).fetchall()
        assert [seq for seq, _ in rows] == list(range(1, last_seq + 1)), f"gap in {execution}"
        assert sealed_at is not None, f"stream {execution} never sealed"
        if not rows:
            continue
        printed = [line.encode() for line in _copy_of(rows[0][1], copies)]
        stored = [payload for _, payload in rows]
        if outcomes[execution] in COMPLETE:
            assert stored == printed, f"execution {execution} ({outcomes[execution]})"
        else:
            assert stored == printed[: len(stored)], f"execution {execution} not a prefix"
        checked += len(stored)
    # Every execution whose agent printed anything has a stream.
    runs = {json.loads(p)["run"] for (p,) in events.execute("SELECT payload FROM events")}
    assert len(runs) == len([s for s in streams if s[1] > 0])
    return checked


def _copy_of(payload: bytes, copies: Path) -> list[str]:
    run = json.loads(payload)["run"]
    return (copies / run).read_text().splitlines()


def _stall_report(fleet: Fleet, chaos: Chaos) -> str:
    """What a stalled soak needs to be replayed and understood: seed, stuck rows, status, log."""
    lines = [f"soak seed={SEED} stalled; kills {dict(chaos.killed)}"]
    lines.append(f"unfinished (-1: queue.db busy): {_unfinished(fleet.state_dir)}")
    try:
        with contextlib.closing(_readonly(fleet.state_dir / "queue.db")) as queue:
            marks = ",".join("?" * len(TERMINAL))
            stuck = queue.execute(
                f"SELECT * FROM tasks WHERE state NOT IN ({marks}) LIMIT 5", TERMINAL
            ).fetchall()
            for row in stuck:
                lines.append(f"task {row!r}")
                lines += [
                    f"  execution {e!r}"
                    for e in queue.execute("SELECT * FROM executions WHERE task_id = ?", (row[0],))
                ]
    except apsw.Error as exc:
        lines.append(f"queue.db unreadable: {exc!r}")
    status = fleet.ctl("status", "--json", check=False)
    lines.append(f"status: {status.stdout[-3000:]} {status.stderr[-500:]}")
    lines.append(f"processes: {[(p, title(p)) for p in processes_under(fleet.state_dir.parent)]}")
    lines.append(f"log tail:\n{fleet.log()[-6000:]}")
    return "\n".join(lines)


def _integrity(path: Path) -> None:
    with contextlib.closing(_readonly(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", path


def _soak_env() -> dict[str, str]:
    return {
        **os.environ,
        "FLEET_QUEUE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "FLEET_QUEUE_LEASE_SECONDS": "10",
        "FLEET_QUEUE_RETRY_BACKOFF_SECONDS": "0.1",
        "FLEET_WORKER_GRACE_SECONDS": "1",
        # Random kills hit one child many times: that is the test, not a crash loop.
        "FLEET_SUPERVISOR_CRASH_LOOP_RESTARTS": "100000",
        "FLEET_SUPERVISOR_RESTART_BACKOFF_MAX": "0.5",
    }


def test_soak_with_random_kills_loses_nothing() -> None:
    rng = random.Random(SEED)
    root = short_tempdir("soak")
    copies = root / "copies"
    copies.mkdir()
    fleet = Fleet(root / "s", _soak_env())
    started = time.monotonic()
    chaos = Chaos(fleet, rng, _plan(rng))
    try:
        fleet.start("--workers", str(WORKERS))
        lines = "".join(json.dumps(spec) + "\n" for spec in _task_specs(rng, copies))
        fleet.ctl("enqueue", "--file", "-", input=lines.encode())
        while chaos.plan and _unfinished(fleet.state_dir):
            time.sleep(rng.uniform(0.1, 0.8))  # a random moment to strike, not a wait
            chaos.strike()
        try:
            wait_for(lambda: not _unfinished(fleet.state_dir), 60 + TASKS, 0.2, "tasks to end")
        except AssertionError as stalled:
            raise AssertionError(_stall_report(fleet, chaos)) from stalled
        fleet.ctl("stop")
        assert fleet.wait_exit(60) == 0
        queue = _readonly(fleet.state_dir / "queue.db")
        events = _readonly(fleet.state_dir / "events.db")
        states = _check_tasks(queue)
        runs = dict(queue.execute("SELECT outcome, COUNT(*) FROM executions GROUP BY outcome"))
        stored = _check_events(queue, events, copies)
        for db in ("queue.db", "events.db"):
            _integrity(fleet.state_dir / db)
        assert not list((fleet.state_dir / "spool").iterdir()), "spools left un-ingested"
        left = processes_under(root)
    finally:
        fleet.close()
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"processes left behind: {left}"
    print(
        f"\nsoak seed={SEED}: {TASKS} tasks {dict(states)}, executions {runs}, "
        f"{stored} events checked, "
        f"kills {dict(chaos.killed)}, {time.monotonic() - started:.0f} s"
    )
