"""The output rest (`worker.output_batch_ms`): after the spawn, and after a read that found
little, a worker polls only the agent's pidfd for a moment; the agent's end is read at once,
output and all, in the same turn. The clock is passed in, as the loop passes it."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.worker.execution import DRAIN_SECONDS
from fleetd.worker.logic import Phase, Worker
from fleetd.worker.output import REST_BELOW_BYTES
from shared.config import FleetConfig, load_config
from shared.models import TaskSpec
from tests.support.inline_job import InlineJob
from tests.support.procs import kill_and_wait
from tests.unit.worker.drive import NOW, Outgoing, assign, events_of, run_agent, shell

pytestmark = pytest.mark.usefixtures("no_leftovers")

REST_MS = 50.0
REST = REST_MS / 1000
WAIT = 10.0  # the longest any select here waits


def _worker(tmp_path: Path, rest_ms: float) -> Worker:
    env = {
        "HOME": str(tmp_path),
        "FLEET_WORKER_GRACE_SECONDS": "1",
        "FLEET_WORKER_OUTPUT_BATCH_MS": str(rest_ms),
    }
    config: FleetConfig = load_config(env, None, {"state_dir": str(tmp_path / "state")})
    config.paths().create()
    host = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    return Worker(config, "w1", host, job=InlineJob(), pid=4242)


@pytest.fixture
def resting(tmp_path: Path) -> Iterator[Worker]:
    made = _worker(tmp_path, REST_MS)
    yield made
    made.close()


def _pipes(worker: Worker) -> tuple[int, int]:
    execution = worker.execution
    assert execution is not None and execution.proc is not None
    return execution.proc.stdout.fileno(), execution.proc.stderr.fileno()


def _pidfd(worker: Worker) -> int:
    assert worker.execution is not None
    return worker.execution.pidfd


def _wait_readable(fd: int) -> None:
    ready, _, _ = select.select([fd], [], [], WAIT)
    assert ready, f"fd {fd} did not become readable in {WAIT} s"


def test_after_the_spawn_only_the_pidfd_is_polled_until_the_rest_ends(resting: Worker) -> None:
    resting.step(NOW)  # its first heartbeat: the next is a second away
    resting.on_broker(assign(shell("sleep 0.2")), NOW)
    pidfd = _pidfd(resting)
    assert resting.fds(NOW) == [pidfd]
    assert resting.fds(NOW + REST * 0.9) == [pidfd]
    assert 0 < resting.next_timeout(NOW) <= REST  # the loop wakes when the rest ends
    assert sorted(resting.fds(NOW + REST)) == sorted([*_pipes(resting), pidfd])
    run_agent(resting)


def test_an_agent_that_prints_and_exits_is_read_whole_at_its_end(resting: Worker) -> None:
    script = 'echo \'{"type":"one"}\'; echo oops >&2; echo \'{"type":"two"}\''
    resting.on_broker(assign(shell(script)), NOW)
    _wait_readable(_pidfd(resting))  # the pipes are not polled: only the end wakes the loop
    out = resting.on_agent_fd(_pidfd(resting), NOW + 0.001)
    assert events_of(out) == [b'{"type":"one"}', b'{"type":"two"}']
    execution = resting.execution
    assert execution is not None and execution.done  # both pipes read to their end
    assert list(execution.stderr_tail) == ["oops"]
    resting.step(NOW + 0.001)
    assert resting.phase is Phase.IDLE and resting.closing_phase(1) is Phase.SEALING


def test_a_read_of_little_output_rests_the_pipes_again(resting: Worker) -> None:
    resting.on_broker(assign(shell('echo \'{"type":"one"}\'; exec sleep 5')), NOW)
    stdout, _ = _pipes(resting)
    later = NOW + REST
    _wait_readable(stdout)
    assert events_of(resting.on_agent_fd(stdout, later)) == [b'{"type":"one"}']
    assert resting.fds(later) == [_pidfd(resting)]
    assert stdout in resting.fds(later + REST)
    resting.stop(later)
    run_agent(resting)


FULL_READ = REST_BELOW_BYTES + 1000


def _start_a_fast_writer(worker: Worker) -> tuple[int, int]:
    """An agent that writes more than a rest allows to stdout at once, then a line to
    stderr, then waits; returns its pipes once both writes are in them."""
    program = (
        f"import os, time; os.write(1, b'x' * {FULL_READ} + b'\\n');"
        " os.write(2, b'written\\n'); time.sleep(5)"
    )
    spec = TaskSpec(prompt="p", agent="command", argv=[sys.executable, "-c", program])
    worker.on_broker(assign(spec), NOW)
    stdout, stderr = _pipes(worker)
    _wait_readable(stderr)  # so the whole write is in the stdout pipe
    return stdout, stderr


def test_a_full_read_is_not_followed_by_a_rest(resting: Worker) -> None:
    """An agent writing fast is read again at once: a rest would leave it on a full pipe."""
    stdout, _ = _start_a_fast_writer(resting)
    later = NOW + REST
    resting.on_agent_fd(stdout, later)
    execution = resting.execution
    assert execution is not None and execution.heard_bytes >= FULL_READ
    assert stdout in resting.fds(later)
    resting.stop(later)
    run_agent(resting)


def test_with_no_batching_the_pipes_are_polled_from_the_start(tmp_path: Path) -> None:
    worker = _worker(tmp_path, 0)
    try:
        worker.on_broker(assign(shell("sleep 0.1")), NOW)
        assert sorted(worker.fds(NOW)) == sorted([*_pipes(worker), _pidfd(worker)])
        run_agent(worker)
    finally:
        worker.close()


def test_the_rest_is_at_most_half_the_idle_limit(resting: Worker) -> None:
    """Output waiting in a resting pipe is read before the idle limit could take it for
    silence."""
    resting.on_broker(assign(shell("sleep 0.2", idle_timeout=0.004)), NOW)
    pidfd = _pidfd(resting)
    assert resting.fds(NOW + 0.0019) == [pidfd]
    assert sorted(resting.fds(NOW + 0.002)) == sorted([*_pipes(resting), pidfd])
    run_agent(resting)


def test_a_full_read_is_not_undone_by_a_small_one_in_the_same_turn(resting: Worker) -> None:
    stdout, stderr = _start_a_fast_writer(resting)
    later = NOW + REST
    resting.on_agent_fd(stdout, later)  # full: no rest
    resting.on_agent_fd(stderr, later)  # a little, in the same turn
    assert stdout in resting.fds(later)
    resting.stop(later)
    run_agent(resting)


def _run_on_the_clock(worker: Worker) -> list[Outgoing]:
    """The process loop's way, on the real monotonic clock: poll what `fds(now)` says, as
    long as `next_timeout(now)` says, until the agent is done."""
    out: list[Outgoing] = []
    deadline = time.monotonic() + WAIT
    while worker.phase is Phase.RUNNING:
        assert time.monotonic() < deadline, "the agent did not end in time"
        now = time.monotonic()
        out += worker.step(now)
        fds, timeout = worker.fds(now), min(worker.next_timeout(now), 0.2)
        ready = select.select(fds, [], [], timeout)[0] if fds else []
        if not fds:
            time.sleep(timeout)
        for fd in ready:
            out += worker.on_agent_fd(fd, time.monotonic())
    return out


def test_a_stray_writer_still_holding_the_pipe_after_the_leader_exits_is_read(
    resting: Worker,
) -> None:
    """The exit's drain reads what is there; what a stray writer prints after it (within the
    drain period) is read by the loop as before."""
    script = "setsid sh -c 'sleep 0.3; echo late' & sleep 0.1; echo '{\"type\":\"first\"}'"
    resting.on_broker(assign(shell(script)), time.monotonic())  # the loop's clock, as below
    out = _run_on_the_clock(resting)
    assert events_of(out) == [b'{"type":"first"}', b"late"]


def test_a_stray_writer_past_the_drain_period_is_cut_off(resting: Worker, tmp_path: Path) -> None:
    pidfile = tmp_path / "stray.pid"
    script = (
        f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' & sleep 0.1;"
        ' echo \'{"type":"first"}\''
    )
    began = time.monotonic()
    resting.on_broker(assign(shell(script)), began)  # the loop's clock, as below
    try:
        out = _run_on_the_clock(resting)
        took = time.monotonic() - began
        assert events_of(out) == [b'{"type":"first"}']
        assert DRAIN_SECONDS <= took < DRAIN_SECONDS + 5  # the pipes closed after the drain
    finally:
        with contextlib.suppress(OSError, ValueError):
            kill_and_wait(int(pidfile.read_text()))  # the stray this test started
