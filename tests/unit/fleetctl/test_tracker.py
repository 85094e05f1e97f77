"""`fleetctl tracker` from the status file: none yet, a hostile error text, JSON as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from shared.tracker import RepoStatus, TaskLink, TrackerStatus, status_file


def fleetctl(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "fleetctl", "--state-dir", str(state_dir), "tracker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_a_tracker_it_says_how_to_have_one(tmp_path: Path) -> None:
    done = fleetctl(tmp_path)
    assert done.returncode == 1 and "[tracker.github]" in done.stderr and not done.stdout


def test_the_status_is_shown_with_terminal_controls_escaped(tmp_path: Path) -> None:
    status = TrackerStatus(
        tracker="github",
        api_url="https://api.github.com",
        pid=123,
        updated_at=time.time(),
        rate_limit=5000,
        rate_remaining=4321,
        rate_reset_at=time.time() + 600,
        repos=[RepoStatus(repo="o/r", phase="backing off", errors=2, error="bad \x1b[2J thing")],
        links=[TaskLink(task=4, issue="o/r#7", pull_url="https://github.example/o/r/pull/8")],
    )
    path = status_file(tmp_path)
    path.parent.mkdir()
    path.write_bytes(msgspec.json.encode(status))
    human = fleetctl(tmp_path)
    assert human.returncode == 0, human.stderr
    assert "4321 of 5000 left" in human.stdout and "backing off" in human.stdout
    assert "\x1b" not in human.stdout and "\\x1b[2J" in human.stdout
    assert "https://github.example/o/r/pull/8" in human.stdout
    shown = json.loads(fleetctl(tmp_path, "--json").stdout)
    assert shown["repos"][0]["error"] == "bad \x1b[2J thing" and shown["links"][0]["task"] == 4
