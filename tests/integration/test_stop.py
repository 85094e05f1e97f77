"""Stopping: Ctrl-C, a bounded `fleetctl stop --timeout`, a second stop while stopping."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import apsw
import psutil
import pytest

from tests.support.fleet import Fleet, running_fleet, short_tempdir, wait_for
from tests.support.procs import processes_under
from tests.support.requires import needs_root, needs_tools

pytestmark = pytest.mark.timeout(90)

# An agent that ignores SIGTERM: only SIGKILL ends it.
STUBBORN = ["--", "sh", "-c", "trap '' TERM; echo '{\"stubborn\":1}'; while :; do sleep 0.1; done"]


def _started(fleet: Fleet, task: int) -> None:
    wait_for(lambda: fleet.events(task), what=f"task {task} to print")


def _stored(fleet: Fleet, task: int) -> list[bytes]:
    db = apsw.Connection(str(fleet.state_dir / "events.db"), flags=apsw.SQLITE_OPEN_READONLY)
    rows = db.execute(
        "SELECT e.payload FROM events e JOIN streams s ON s.execution_id = e.execution_id"
        " WHERE s.task_id = ? AND s.sealed_at IS NOT NULL ORDER BY e.execution_id, e.seq",
        (task,),
    ).fetchall()
    return [payload for (payload,) in rows]


def test_ctrl_c_stops_cleanly_and_flushes_every_event(fleet: Fleet, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    script = f'for i in $(seq 1 200); do echo "{{\\"n\\":$i}}" | tee -a {copy}; done; sleep 300'
    task = fleet.enqueue("count then wait", "--", "sh", "-c", script)
    wait_for(lambda: len(fleet.events(task)) == 200, what="200 events")
    # Ctrl-C in a terminal signals the whole foreground process group.
    os.killpg(fleet.pid, signal.SIGINT)
    assert fleet.wait_exit(30) == 0
    assert not processes_under(fleet.state_dir)
    assert _stored(fleet, task) == copy.read_bytes().splitlines()
    fleet.start()
    first = fleet.show(task)["executions"][0]
    assert first["outcome"] == "interrupted"


def test_stop_timeout_bounds_the_shutdown_when_an_agent_ignores_sigterm() -> None:
    # A grace period far longer than the bound: only the bound can end this shutdown.
    env = {**os.environ, "FLEET_WORKER_GRACE_SECONDS": "300"}
    with running_fleet("--workers", "1", env=env) as fleet:
        task = fleet.enqueue("stubborn", *STUBBORN)
        _started(fleet, task)
        agent = fleet.agent_pid()
        # fleetctl fails (exit 1) if fleetd is still running 5 s after the bound.
        result = fleet.ctl("stop", "--timeout", "4", "--json", timeout=60)
        assert json.loads(result.stdout) == {
            "pid": fleet.pid,
            "state": "stopped",
            "exited": True,
            "socket_activated": False,
        }
        assert fleet.wait_exit(10) == 0
        assert not psutil.pid_exists(agent)
        assert not processes_under(fleet.state_dir)
        fleet.env["FLEET_WORKER_GRACE_SECONDS"] = "1"  # the re-run ends quickly
        fleet.start()
        shown = fleet.show(task)
        first = shown["executions"][0]
        assert first["outcome"] == "lost"
        assert first["result"]["reason"] == "fleet stop timed out while this task ran"
        fleet.ctl("cancel", str(task))


def test_second_stop_while_stopping_is_harmless() -> None:
    env = {**os.environ, "FLEET_WORKER_GRACE_SECONDS": "4"}
    with running_fleet("--workers", "1", env=env) as fleet:
        task = fleet.enqueue("stubborn", *STUBBORN)
        _started(fleet, task)
        fleet.ctl("stop", "--no-wait")
        # The stubborn agent holds fleetd in its stopping phase for the grace period.
        assert fleet.json("status")["stopping"] == "stopping"
        second = fleet.ctl("stop", "--json", timeout=60)
        assert json.loads(second.stdout)["exited"] is True
        assert fleet.wait_exit(10) == 0
        fleet.env["FLEET_WORKER_GRACE_SECONDS"] = "1"
        fleet.start()
        first = fleet.show(task)["executions"][0]
        assert first["outcome"] == "interrupted"
        assert first["result"]["signal"] == signal.SIGKILL
        fleet.ctl("cancel", str(task))


@needs_root()
@needs_tools("unshare")
def test_a_fleetd_in_another_pid_namespace_is_not_claimed_stopped(tmp_path: Path) -> None:
    """fleetd in a pid namespace of its own (as in a container), fleetctl outside: the pid
    fleetd reports names nothing (or another process) here, so fleetctl does not wait on it
    and says so, rather than waiting forever or claiming it stopped."""
    root = short_tempdir()
    fleet = Fleet(root / "s")
    # --fork: fleetd is pid 1 of the new namespace; --kill-child: it dies with unshare.
    launcher = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    fleet.start("--workers", "1", wait=False, launcher=launcher)
    try:
        fleet.wait_ready()
        assert fleet.status().pid == 1
        result = fleet.ctl("stop", "--json", timeout=30)
        assert json.loads(result.stdout) == {
            "pid": 1,
            "state": "stopping",
            "exited": False,
            "socket_activated": False,
        }
        assert fleet.wait_exit(20) == 0
    finally:
        fleet.close()
        left = processes_under(root)
        shutil.rmtree(root, ignore_errors=True)
    assert not left


def test_show_tells_runs_from_attempts_after_a_stop(fleet: Fleet) -> None:
    """A stop refunds the interrupted run's attempt: `show` numbers executions as runs, and its
    attempts line says how many runs it does not count."""
    task = fleet.enqueue("runs until stopped", "--", "sh", "-c", "cat >/dev/null; sleep 300")
    fleet.wait_state(task, "running")
    fleet.ctl("stop")
    fleet.start()
    fleet.wait_state(task, "running")
    said = fleet.ctl("show", str(task)).stdout
    table = [line.split() for line in said.splitlines() if line.startswith("EXECUTION")]
    assert table == [["EXECUTION", "RUN", "WORKER", "OUTCOME", "STARTED", "EXIT", "NOTE"]]
    assert "attempts:       1 (and 1 run(s) interrupted by a stop, not counted)" in said
    assert "(run 1 on w" in said and "(run 2 on w" in said
