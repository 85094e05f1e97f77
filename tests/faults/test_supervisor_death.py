"""kill -9 of the supervisor alone (an OOM kill, a watchdog, a person): its fork server,
broker, recorder, workers and their agents end with it, a new fleetd never runs beside what
is left of the old one, and the interrupted task comes back as `lost`, not as the agent's
failure."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from tests.support.fleet import Fleet, short_tempdir, wait_for
from tests.support.procs import is_alive, processes_under, session_members

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def one_worker_fleet() -> Iterator[Fleet]:
    root = short_tempdir()
    fleet = Fleet(root / "s")
    try:
        fleet.start("--workers", "1")
        yield fleet
    finally:
        fleet.close()
        left = processes_under(root)
        assert not left, f"processes left behind: {left}"


def _second_run_succeeds(tmp_path: Path) -> tuple[list[str], Path]:
    """A task whose first run sleeps (until killed) and whose second run prints and ends."""
    marker = tmp_path / "first-run-started"
    script = (
        f"if [ -e {marker} ]; then echo '{{\"ok\":1}}'; else touch {marker}; exec sleep 300; fi"
    )
    return ["--", "sh", "-c", script], marker


def _agent_pid(fleet: Fleet) -> int:
    return fleet.agent_pid()


def _outcomes(fleet: Fleet, task: int) -> list[tuple[str | None, str | None]]:
    conn = apsw.Connection(str(fleet.state_dir / "queue.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute(
            "SELECT outcome, result FROM executions WHERE task_id = ? ORDER BY id", (task,)
        ).fetchall()
    finally:
        conn.close()
    return [(outcome, result) for outcome, result in rows]


def _kill_supervisor_alone(fleet: Fleet) -> None:
    os.kill(fleet.pid, signal.SIGKILL)
    fleet.wait_exit(10)


def _roles(fleet: Fleet) -> dict[str, int]:
    return {p["role"]: p["pid"] for p in fleet.json("status")["processes"]}


def _assert_lost_then_succeeded(fleet: Fleet, task: int) -> None:
    fleet.wait_state(task, "succeeded", timeout=60)
    outcomes = [outcome for outcome, _ in _outcomes(fleet, task)]
    assert outcomes == ["lost", "succeeded"], _outcomes(fleet, task)


def test_every_child_and_agent_end_with_the_supervisor(
    one_worker_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = one_worker_fleet
    command, marker = _second_run_succeeds(tmp_path)
    task = fleet.enqueue("outlives nothing", *command)
    wait_for(marker.exists, what="the first run to start")
    agent = _agent_pid(fleet)
    old = set(session_members(fleet.pid)) - {fleet.pid}  # fork server, tracker, children
    assert set(_roles(fleet).values()) <= old and len(old) >= 5
    _kill_supervisor_alone(fleet)
    wait_for(
        lambda: not any(is_alive(pid) for pid in [*old, agent]),
        30,
        what="the children, the fork server and the agent to end",
    )
    fleet.start("--workers", "1")
    _assert_lost_then_succeeded(fleet, task)
    new = _roles(fleet)
    assert not set(new.values()) & old
    assert all(is_alive(pid) for pid in new.values())


def test_a_new_fleetd_ends_what_is_left_of_the_old_one(
    one_worker_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = one_worker_fleet
    command, marker = _second_run_succeeds(tmp_path)
    task = fleet.enqueue("left running", *command)
    wait_for(marker.exists, what="the first run to start")
    agent = _agent_pid(fleet)
    old = set(session_members(fleet.pid)) - {fleet.pid}
    # Stopped, the old children cannot notice their supervisor die: as if they were slow to.
    for pid in old:
        os.kill(pid, signal.SIGSTOP)
    try:
        _kill_supervisor_alone(fleet)
        fleet.start("--workers", "1")
        assert not any(is_alive(pid) for pid in [*old, agent]), "a new fleetd ran beside the old"
        _assert_lost_then_succeeded(fleet, task)
        assert "earlier fleetd" in fleet.log()
    finally:
        for pid in old:
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)  # outside the new fleetd's session: ours to end
