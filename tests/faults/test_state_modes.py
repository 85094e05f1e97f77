"""Defence in depth: every file and socket fleetd makes under its state directory is the
owner's alone, so a state directory loosened by hand does not expose prompts and events."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.support.fleet import Fleet, short_tempdir

pytestmark = pytest.mark.timeout(90)


def _modes(root: Path) -> dict[str, int]:
    """Every entry under `root` (not following links) and its permission bits."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_every_file_and_socket_is_owner_only(fleet: Fleet) -> None:
    done = fleet.enqueue("prints", "--", "sh", "-c", "echo '{\"n\":1}'")
    fleet.wait_state(done, "succeeded")
    fleet.enqueue("runs on", "--", "sleep", "300")
    fleet.agent_pid()  # the agent is on record
    modes = _modes(fleet.state_dir)
    for name in ("queue.db", "queue.db-wal", "queue.db-shm", "events.db", "events.db-wal"):
        assert name in modes, f"{name} not made: {sorted(modes)}"
    assert any(name.startswith("run/") for name in modes)
    loose = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
    assert not loose, f"readable by group or others: {loose}"


def test_files_an_older_fleetd_left_loose_are_tightened_at_start() -> None:
    root = short_tempdir()
    state = root / "s"
    (state / "agents").mkdir(parents=True, mode=0o755)
    (state / "logs").mkdir(mode=0o755)
    for name in ("queue.db", "events.db", "agents/9.pid", "logs/fleetd.log"):
        (state / name).write_bytes(b"")
    for path in [state, *state.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    (state / "agents" / "9.pid").write_text("999999 1\n")
    fleet = Fleet(state)
    try:
        fleet.start("--workers", "1")
        loose = {name: oct(mode) for name, mode in _modes(state).items() if mode & 0o077}
        assert not loose, f"still readable by group or others: {loose}"
    finally:
        fleet.close()
        shutil.rmtree(root, ignore_errors=True)
