"""The record of one fleetd's processes, and how a new fleetd ends what an old one left:
with real (sleeping) processes, each ended by the test that started it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.runtime.locks import FileLock
from fleetd.runtime.processes import start_time
from fleetd.supervisor.generation import Generation
from shared.errors import StateDirError
from shared.paths import StatePaths

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    made = StatePaths(tmp_path / "s")
    made.create()
    return made


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def _quick(paths: StatePaths) -> Generation:
    return Generation(paths, orphans_end=0.2, killed_end=1.0)


def test_the_record_keeps_each_live_process_with_its_start_time(
    paths: StatePaths, sleeper: subprocess.Popen[bytes]
) -> None:
    generation = _quick(paths)
    generation.record({"worker 1": sleeper.pid, "broker": 2**22 + 1})  # the second is no pid
    assert generation.recorded() == [(sleeper.pid, start_time(sleeper.pid), "worker 1")]


def test_nothing_left_starts_at_once(paths: StatePaths) -> None:
    _quick(paths).end_leftovers()
    assert FileLock.try_existing(paths.generation_lock) is not None


def test_a_recorded_process_still_running_is_killed(
    paths: StatePaths, sleeper: subprocess.Popen[bytes]
) -> None:
    generation = _quick(paths)
    generation.record({"worker 1": sleeper.pid})
    generation.end_leftovers()
    assert sleeper.wait(5) == -9


def test_a_pid_reused_by_another_process_is_left_alone(
    paths: StatePaths, sleeper: subprocess.Popen[bytes]
) -> None:
    started = start_time(sleeper.pid)
    assert started is not None
    paths.generation_file.write_text(f"{sleeper.pid} {started - 1} worker 1\n")
    _quick(paths).end_leftovers()
    assert sleeper.poll() is None


def test_an_unrecorded_holder_of_the_lock_is_refused_by_name(paths: StatePaths) -> None:
    held = FileLock(paths.generation_lock)
    assert held.acquire(shared=True)
    try:
        with pytest.raises(StateDirError, match="processes of an earlier fleetd still hold"):
            _quick(paths).end_leftovers()
    finally:
        held.release()
