"""A child that keeps dying: restarted with backoff, then the fleet stops and says why."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.fleet import Fleet, short_tempdir
from tests.support.procs import processes_under

pytestmark = pytest.mark.timeout(90)


def test_recorder_that_cannot_open_its_database_stops_the_fleet() -> None:
    root = short_tempdir()
    state = root / "s"
    state.mkdir(mode=0o700)
    (state / "events.db").mkdir()  # SQLite cannot open a directory: the recorder dies at start
    env = {
        **os.environ,
        "FLEET_SUPERVISOR_CRASH_LOOP_RESTARTS": "3",
        "FLEET_SUPERVISOR_RESTART_BACKOFF_MAX": "0.5",
    }
    fleet = Fleet(state, env)
    try:
        fleet.start("--workers", "1", wait=False)
        code = fleet.wait_exit(60)
        log = fleet.log()
    finally:
        fleet.close()
        left = processes_under(root)
        shutil.rmtree(root, ignore_errors=True)
    assert code == 1, log
    # Restarted (with backoff) before giving up, then one line that says what and why.
    assert log.count("recorder (pid") >= 3 and "restarting" in log
    assert "recorder died 4 times within 60 s (last exit code 1); stopping the fleet" in log
    assert "unable to open database file" in log  # the child's own reason
    assert "stopping (crash loop)" in log
    assert "fleetd stopped" in log
    assert not left
