"""The agent registry: a new fleetd ends exactly the agents a dead one recorded."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fleetd.agents.base import AgentCommand
from fleetd.runtime.agent_registry import AgentRecord, AgentRegistry
from fleetd.runtime.processes import start_time
from fleetd.worker.agent_process import spawn
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
    AgentRecord(registry.directory, 4242).record(agent.pid)
    assert [(pid) for _, pid, _ in registry.leftovers()] == [agent.pid]
    assert registry.end_leftovers() == 1
    wait_for(lambda: ended(agent), 5, what="the agent to be killed")
    assert registry.leftovers() == []


def test_a_forgotten_agent_is_left_alone(
    registry: AgentRegistry, agent: subprocess.Popen[bytes]
) -> None:
    record = AgentRecord(registry.directory, 4242)
    record.record(agent.pid)
    record.forget()
    assert registry.leftovers() == []
    assert registry.end_leftovers() == 0
    assert is_alive(agent.pid)
    assert list(registry.directory.iterdir()) == []  # blank records are removed too


def test_a_pid_reused_by_another_process_is_left_alone(
    registry: AgentRegistry, agent: subprocess.Popen[bytes]
) -> None:
    started = start_time(agent.pid)
    assert started is not None
    (registry.directory / "7.pid").write_text(f"{agent.pid} {started - 100}\n")
    assert registry.end_leftovers() == 0
    assert is_alive(agent.pid)
    assert registry.leftovers() == []  # the stale record is dropped


def test_the_start_time_is_the_kernels_clock_ticks_since_boot(
    agent: subprocess.Popen[bytes],
) -> None:
    """The same value psutil derives its create_time from (boot time + ticks / CLK_TCK)."""
    ticks = start_time(agent.pid)
    assert ticks is not None
    derived = psutil.boot_time() + ticks / os.sysconf("SC_CLK_TCK")
    assert abs(derived - psutil.Process(agent.pid).create_time()) < 0.02
    assert start_time(agent.pid) == ticks  # the same process, the same value


def test_a_gone_process_has_no_start_time() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait(5)
    assert start_time(proc.pid) is None


def test_an_unreadable_record_is_skipped(registry: AgentRegistry) -> None:
    (registry.directory / "8.pid").write_text("not a record\n")
    assert registry.leftovers() == []
    assert registry.end_leftovers() == 0


def test_a_worker_rewrites_one_file_in_place_and_removes_it_when_it_exits(
    registry: AgentRegistry, agent: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """No file made or unlinked per agent; a second agent's record replaces the first."""
    record = AgentRecord(registry.directory, 4242)
    record.record(os.getpid())
    record.forget()
    inode = record.path.stat().st_ino
    record.record(agent.pid)
    assert [(path, pid) for path, pid, _ in registry.leftovers()] == [(record.path, agent.pid)]
    assert record.path.stat().st_ino == inode
    assert oct(record.path.stat().st_mode & 0o777) == "0o600"
    record.forget()
    record.close()
    assert list(registry.directory.iterdir()) == []


def test_a_worker_that_exits_holding_an_agent_leaves_its_record(
    registry: AgentRegistry, agent: subprocess.Popen[bytes]
) -> None:
    record = AgentRecord(registry.directory, 4242)
    record.record(agent.pid)
    record.close()
    assert [pid for _, pid, _ in registry.leftovers()] == [agent.pid]


def test_a_spawned_agents_start_time_lies_between_the_clocks_read_around_its_spawn(
    registry: AgentRegistry, tmp_path: Path
) -> None:
    """What the worker records without reading /proc matches what /proc says later."""
    proc = spawn(AgentCommand(argv=["sleep", "60"], env={"PATH": os.defpath}, cwd=tmp_path))
    try:
        AgentRecord(registry.directory, 4242).record(proc.pid, proc.spawned)
        [(_, pid, (earliest, latest))] = registry.leftovers()
        started = start_time(proc.pid)
        assert pid == proc.pid and started is not None and earliest <= started <= latest
        assert latest - earliest <= 1  # a spawn takes well under a tick (10 ms)
        assert registry.end_leftovers() == 1
        wait_for(lambda: proc.poll() is not None, 5, what="the agent to be killed")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        proc.stdout.close()
        proc.stderr.close()


def test_a_record_of_one_start_time_from_an_older_fleetd_is_read(
    registry: AgentRegistry, agent: subprocess.Popen[bytes]
) -> None:
    started = start_time(agent.pid)
    (registry.directory / "9.pid").write_text(f"{agent.pid} {started}\n")
    assert [(pid, span) for _, pid, span in registry.leftovers()] == [
        (agent.pid, (started, started))
    ]
    assert registry.end_leftovers() == 1
