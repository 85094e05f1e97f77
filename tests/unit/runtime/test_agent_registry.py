"""The agent registry: a new fleetd ends exactly the agents a dead one recorded."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fleetd.runtime.agent_registry import AgentRegistry
from tests.support.fleet import wait_for
from tests.support.procs import is_alive

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture
def registry(tmp_path: Path) -> AgentRegistry:
    directory = tmp_path / "agents"
    directory.mkdir()
    return AgentRegistry(directory)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process leading its own session and group, as agents do (its cwd marks it as ours)."""
    proc = subprocess.Popen(["sleep", "60"], cwd=tmp_path, start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def ended(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def test_a_recorded_agent_is_ended_by_the_next_fleetd(
    registry: AgentRegistry, agent: subprocess.Popen[bytes]
) -> None:
    registry.record(7, agent.pid)
    assert [(pid) for _, pid, _ in registry.leftovers()] == [agent.pid]
    assert registry.end_leftovers() == 1
    wait_for(lambda: ended(agent), 5, what="the agent to be killed")
    assert registry.leftovers() == []


def test_a_forgotten_agent_is_left_alone(
    registry: AgentRegistry, agent: subprocess.Popen[bytes]
) -> None:
    registry.record(7, agent.pid)
    registry.forget(7)
    assert registry.end_leftovers() == 0
    assert is_alive(agent.pid)


def test_a_pid_reused_by_another_process_is_left_alone(
    registry: AgentRegistry, agent: subprocess.Popen[bytes]
) -> None:
    started = psutil.Process(agent.pid).create_time()
    (registry.directory / "7.pid").write_text(f"{agent.pid} {started - 3600!r}\n")
    assert registry.end_leftovers() == 0
    assert is_alive(agent.pid)
    assert registry.leftovers() == []  # the stale record is dropped


def test_a_record_in_clock_ticks_from_an_older_fleetd_is_understood(
    registry: AgentRegistry, agent: subprocess.Popen[bytes]
) -> None:
    started = psutil.Process(agent.pid).create_time()
    ticks = round((started - psutil.boot_time()) * os.sysconf("SC_CLK_TCK"))
    (registry.directory / "7.pid").write_text(f"{agent.pid} {ticks}\n")
    assert registry.end_leftovers() == 1
    wait_for(lambda: ended(agent), 5, what="the agent to be killed")


def test_an_unreadable_record_is_skipped(registry: AgentRegistry) -> None:
    (registry.directory / "8.pid").write_text("not a record\n")
    assert registry.leftovers() == []
    assert registry.end_leftovers() == 0
