"""fleetd's life: start (attached and detached), the state-directory lock, stop, drain, config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import apsw
import psutil
import pytest

from tests.support.fleet import (
    FLEETD,
    Fleet,
    processes_under,
    running_fleet,
    session_members,
    short_tempdir,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)

SLEEPER = ["--", "sh", "-c", 'echo \'{"type":"started"}\'; exec sleep 300']


def _fleetd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLEETD, *args], capture_output=True, text=True, timeout=60, env=env or dict(os.environ)
    )


def test_second_daemon_on_same_state_dir_is_refused(fleet: Fleet) -> None:
    result = _fleetd("--foreground", "--state-dir", str(fleet.state_dir))
    assert result.returncode != 0
    assert "already running" in result.stderr and str(fleet.pid) in result.stderr
    assert fleet.json("status")["pid"] == fleet.pid


def test_stop_puts_running_tasks_back_and_exits_0(fleet: Fleet) -> None:
    running = [fleet.enqueue(f"hold {i}", *SLEEPER) for i in range(2)]
    waiting = fleet.enqueue("waiting", "--", "true")
    for task in running:
        wait_for(lambda t=task: fleet.events(t), what=f"task {task} to start")
    result = fleet.ctl("stop", "--json")
    assert json.loads(result.stdout)["exited"] is True
    assert fleet.wait_exit(10) == 0
    assert not processes_under(fleet.state_dir)
    fleet.start()
    for task in running:
        shown = fleet.wait_state(task, "queued", "running")
        first = shown["executions"][0]
        assert first["outcome"] == "interrupted"
        assert first["result"]["reason"] == "fleet stopping; task put back in the queue"
    assert fleet.show(waiting)["state"] in ("queued", "running", "succeeded")


def test_sigterm_stops_like_fleetctl_stop(fleet: Fleet) -> None:
    task = fleet.enqueue("hold", *SLEEPER)
    wait_for(lambda: fleet.events(task), what="the agent to start")
    os.kill(fleet.pid, signal.SIGTERM)
    os.kill(fleet.pid, signal.SIGTERM)  # a second stop while stopping is harmless
    assert fleet.wait_exit(15) == 0
    assert not session_members(fleet.pid)
    fleet.start()
    assert fleet.show(task)["executions"][0]["outcome"] == "interrupted"


def test_drain_lets_running_tasks_finish(fleet: Fleet, tmp_path: Path) -> None:
    # The task runs until the test lets it go, so the drain surely finds it running.
    go = tmp_path / "go"
    script = f'while [ ! -e {go} ]; do sleep 0.05; done; echo \'{{"type":"done"}}\''
    task = fleet.enqueue("short", "--", "sh", "-c", script)
    wait_for(lambda: fleet.show(task)["state"] == "running", what="the task to start")
    assert fleet.ctl("drain", "--no-wait").returncode == 0
    later = fleet.enqueue("later", "--", "true")
    assert fleet.json("status")["stopping"] == "draining"
    go.touch()
    assert fleet.wait_exit(20) == 0
    db = apsw.Connection(str(fleet.state_dir / "queue.db"), flags=apsw.SQLITE_OPEN_READONLY)
    states = dict(db.execute("SELECT id, state FROM tasks").fetchall())
    assert states == {task: "succeeded", later: "queued"}
    assert (
        db.execute("SELECT COUNT(*) FROM executions WHERE task_id = ?", (later,)).fetchone()[0] == 0
    )


def test_detached_start_returns_when_the_socket_answers() -> None:
    root = short_tempdir()
    state = root / "s"
    try:
        result = _fleetd("--state-dir", str(state), "--workers", "1")
        assert result.returncode == 0, result.stderr
        assert "fleetd started (pid" in result.stdout
        fleet = Fleet(state)
        status = fleet.json("status")
        assert sorted(p["role"] for p in status["processes"]) == ["broker", "recorder", "worker 1"]
        assert psutil.pid_exists(status["pid"])
        again = _fleetd("--state-dir", str(state), "--workers", "1")
        assert again.returncode == 1 and "already running" in again.stderr
        stopped = fleet.ctl("stop")
        assert "stopped" in stdout_of(stopped)
        wait_for(lambda: not processes_under(root), 10, what="no process under the state dir")
    finally:
        for pid in processes_under(root):
            os.kill(pid, signal.SIGKILL)


def stdout_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("workers = 'many'\n", "workers"),
        ("[queue]\nbogus = 1\n", "bogus"),
        ("[nosuch]\nx = 1\n", "nosuch"),
        ("workers = \n", "not valid TOML"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, toml: str, needle: str) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(toml)
    result = _fleetd("--foreground", "--config", str(config), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 2
    assert needle in result.stderr


def test_unknown_fleet_variable_is_named(tmp_path: Path) -> None:
    env = {**os.environ, "FLEET_WORKERZ": "3"}
    result = _fleetd("--foreground", "--state-dir", str(tmp_path / "s"), env=env)
    assert result.returncode == 2 and "FLEET_WORKERZ" in result.stderr


def test_unwritable_state_dir_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = _fleetd("--foreground", "--state-dir", str(blocker / "s"))
    assert result.returncode != 0
    assert "cannot use state directory" in result.stderr


def test_read_only_state_dir_is_refused_not_loosened(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir(mode=0o500)
    state.chmod(0o500)  # mkdir's mode is filtered by the umask
    result = _fleetd("--foreground", "--state-dir", str(state))
    assert result.returncode == 1
    assert "0500" in result.stderr and "chmod u+rwx" in result.stderr
    assert "Traceback" not in result.stderr
    assert (state.stat().st_mode & 0o777) == 0o500  # left as its owner made it


def test_help_documents_every_setting() -> None:
    result = _fleetd("--help")
    assert result.returncode == 0
    for needle in ("FLEET_WORKERS", "FLEET_STATE_DIR", "FLEET_CODEX_BIN", "queue.max_attempts"):
        assert needle in result.stdout


def test_config_file_env_and_flags_layer(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("workers = 1\n")
    env = {**os.environ, "FLEET_CONFIG": str(config)}
    with running_fleet(env=env) as fleet:
        assert len(fleet.json("status")["workers"]) == 1
    env["FLEET_WORKERS"] = "3"
    with running_fleet(env=env) as fleet:
        wait_for(lambda: len(fleet.json("status")["workers"]) == 3, what="3 workers")
    with running_fleet("--workers", "2", env=env) as fleet:
        wait_for(lambda: len(fleet.json("status")["workers"]) == 2, what="2 workers")


def test_python_m_entry_points_match_console_scripts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fleetctl", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and "enqueue" in result.stdout
