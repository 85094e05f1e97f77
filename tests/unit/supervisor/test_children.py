"""Restart policy of the supervisor's children, with time passed explicitly (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.supervisor.children import RESTART_BACKOFF_FIRST, Child, Children, CrashLoop, Roles
from shared.config import load_config


class DeadProcess:
    """Stands in for a multiprocessing process that has exited."""

    pid = 4242
    sentinel = -1

    def __init__(self, exitcode: int | None = 1) -> None:
        self.exitcode = exitcode

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return self.exitcode is None


def _child() -> Child:
    child = Child("recorder", target=lambda: None, args=lambda first: ())
    child.process = DeadProcess()  # type: ignore[assignment]
    return child


def test_restarts_back_off_exponentially_up_to_the_cap() -> None:
    children = Children(backoff_max=1.0, crash_loop_restarts=100, crash_loop_window=60)
    child = _child()
    delays = []
    for now in range(6):
        children.on_exit(child, float(now))
        assert child.restart_at is not None
        delays.append(round(child.restart_at - now, 6))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_too_many_deaths_within_the_window_is_a_crash_loop_that_names_the_child() -> None:
    children = Children(backoff_max=10, crash_loop_restarts=3, crash_loop_window=10)
    child = _child()
    for now in (0.0, 1.0, 2.0):
        children.on_exit(child, now)
    with pytest.raises(CrashLoop, match=r"recorder died 4 times within 10 s \(last exit code 1\)"):
        children.on_exit(child, 3.0)


def test_a_crash_loop_of_a_child_the_fleet_can_do_without_ends_its_restarts_only() -> None:
    children = Children(backoff_max=10, crash_loop_restarts=1, crash_loop_window=10)
    child = Child("web", target=lambda: None, args=lambda first: (), essential=False)
    child.process = DeadProcess()  # type: ignore[assignment]
    children.on_exit(child, 0.0)
    assert child.restartable and child.restart_at is not None
    with pytest.raises(CrashLoop, match=r"web died 2 times .*runs on without it"):
        children.on_exit(child, 1.0)
    assert not child.restartable
    assert children.restart_due(100.0) == []


def test_deaths_older_than_the_window_are_forgiven() -> None:
    children = Children(backoff_max=10, crash_loop_restarts=2, crash_loop_window=10)
    child = _child()
    for now in (0.0, 20.0, 40.0, 60.0, 80.0):
        children.on_exit(child, now)  # never two deaths in one window: no crash loop


def test_a_child_that_stays_up_gets_its_short_backoff_back() -> None:
    children = Children(backoff_max=10, crash_loop_restarts=100, crash_loop_window=5)
    child = _child()
    children.add(child)
    for now in (0.0, 1.0, 2.0):
        children.on_exit(child, now)
    assert child.backoff > RESTART_BACKOFF_FIRST
    child.process = DeadProcess(exitcode=None)  # type: ignore[assignment]  # restarted, alive
    children.calm(4.0)
    assert child.backoff > RESTART_BACKOFF_FIRST
    children.calm(7.5)
    assert child.backoff == RESTART_BACKOFF_FIRST


def test_define_names_each_worker_by_role_and_by_id(tmp_path) -> None:
    from fleetd.supervisor.children import Roles
    from shared.config import load_config

    config = load_config({"HOME": str(tmp_path)}, None, {"workers": 3})

    def entry(*args: object) -> None:
        pass

    children = Children(backoff_max=1.0, crash_loop_restarts=5, crash_loop_window=60)
    children.define(config, Roles(broker=entry, recorder=entry, worker=entry))
    views = {v.role: v.worker for v in children.views()}
    assert views == {
        "broker": None,
        "recorder": None,
        "worker 1": "w1",
        "worker 2": "w2",
        "worker 3": "w3",
    }
    assert children.worker_roles() == ["worker 1", "worker 2", "worker 3"]
    assert children.children["worker 2"].args(True) == (config, "worker 2", "w2")
    assert children.children["broker"].args(False) == (config, False)


def _role(*args: object) -> None:
    """A role entry point (never run here)."""


def test_the_tracker_is_a_child_only_when_its_table_is_set(tmp_path: Path) -> None:
    roles = Roles(broker=_role, recorder=_role, worker=_role, tracker=_role)
    env = {"HOME": str(tmp_path), "FLEET_STATE_DIR": str(tmp_path / "s")}
    plain = Children(backoff_max=1.0, crash_loop_restarts=5, crash_loop_window=60)
    plain.define(load_config(env), roles)
    assert "tracker" not in plain.children
    tracked = Children(backoff_max=1.0, crash_loop_restarts=5, crash_loop_window=60)
    tracked.define(load_config({**env, "FLEET_TRACKER_GITHUB_REPOS": "o/r"}), roles)
    assert "tracker" in tracked.children and tracked.worker_of("tracker") is None
