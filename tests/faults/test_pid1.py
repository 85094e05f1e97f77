"""fleetd as PID 1 (as in a container): it reaps every zombie and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.support.fleet import Fleet, short_tempdir, wait_for
from tests.support.procs import children, is_alive, processes_under
from tests.support.requires import needs_root, needs_tools

pytestmark = [
    pytest.mark.timeout(90),
    needs_root(),
    needs_tools("unshare"),
]


def test_pid1_reaps_orphans_and_stops_on_sigterm() -> None:
    root = short_tempdir()
    state = root / "s"
    env = {**os.environ, "FLEET_STATE_DIR": str(state)}
    log = (root / "log").open("wb")
    argv = ["unshare", "--pid", "--fork", "--mount-proc"]
    argv += [sys.executable, "-m", "fleetd", "--foreground", "--workers", "1"]
    outer = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    fleet = Fleet(state, env)
    try:
        fleet.wait_ready()
        assert fleet.json("status")["pid"] == 1
        fleetd = wait_for(lambda: children(outer.pid), what="unshare's child")[0]
        # Agents that leave descendants in sessions of their own: after the agent exits they
        # are orphans, and only PID 1 can reap them.
        script = "for i in 1 2 3; do setsid sh -c 'sleep 0.3' & done; echo '{\"spawned\":3}'"
        tasks = [fleet.enqueue(f"orphans {i}", "--", "sh", "-c", script) for i in range(3)]
        for task in tasks:
            fleet.wait_state(task, "succeeded")

        def no_zombies() -> bool:
            return all(is_alive(pid) for pid in children(fleetd))

        wait_for(no_zombies, 10, what="fleetd to reap every orphan")
        # unshare does not forward SIGTERM, so it goes to fleetd itself.
        os.kill(fleetd, signal.SIGTERM)
        assert outer.wait(30) == 0
    finally:
        if outer.poll() is None:
            os.killpg(outer.pid, signal.SIGKILL)
            outer.wait(5)
        log.close()
        left = processes_under(root)
        shutil.rmtree(root, ignore_errors=True)
    assert not left
