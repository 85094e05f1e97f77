"""If the supervisor's loop itself ever fails, fleetd still ends: every child and agent is
ended within bounded waits (no forever-wait on the fork server), and it exits 1."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fleet import Fleet, short_tempdir, wait_for
from tests.support.procs import is_alive, processes_under, session_members

pytestmark = pytest.mark.timeout(120)

# fleetd whose loop raises once a file exists: a failure nothing in the loop guards against.
FAILING_FLEETD = """
import os, sys
from fleetd.supervisor import logic
step = logic.Supervisor.step
def failing_step(self, now):
    if os.path.exists(os.environ["FAIL_WHEN"]):
        raise RuntimeError("injected: the supervisor's loop fails")
    return step(self, now)
logic.Supervisor.step = failing_step
from fleetd.cli import main
main()
"""


def test_a_failed_loop_still_ends_every_child_and_exits_1(tmp_path: Path) -> None:
    root = short_tempdir()
    fleet = Fleet(root / "s")
    trigger = tmp_path / "fail-now"
    fleet.env["FAIL_WHEN"] = str(trigger)
    with fleet.log_path.open("ab") as log:
        fleet.proc = subprocess.Popen(
            [sys.executable, "-c", FAILING_FLEETD, "--foreground", "--workers", "1"],
            env=fleet.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        fleet.wait_ready()
        task = fleet.enqueue("runs when it fails", "--", "sleep", "300")
        fleet.wait_state(task, "running")
        agent = fleet.agent_pid()
        helpers = set(session_members(fleet.pid)) - {fleet.pid}
        trigger.touch()
        assert fleet.wait_exit(60) == 1, fleet.log()
        assert "injected: the supervisor's loop fails" in fleet.log()
        wait_for(
            lambda: not any(is_alive(pid) for pid in [*helpers, agent]),
            10,
            what="every child, the fork server and the agent to be gone",
        )
    finally:
        if fleet.proc.poll() is None:
            fleet.proc.send_signal(signal.SIGKILL)
        fleet.close()
        left = processes_under(root)
        assert not left, f"processes left behind: {left}"
