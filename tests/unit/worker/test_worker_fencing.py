"""Fencing on the worker's side: `LeaseLost` ends the agent's whole group, as a cancel does,
keeps the events it printed (the stream is sealed as usual), and reports nothing for it."""

from __future__ import annotations

import contextlib
import os
import time

import psutil
import pytest

from fleetd.worker.closing import RESEND_SECONDS, SEAL_WAIT_SECONDS
from fleetd.worker.logic import Phase, Worker
from shared import messages as m
from tests.unit.worker.drive import (
    NOW,
    assign,
    events_of,
    read_events,
    run_agent,
    seal,
    shell,
    stream_end,
    to_broker,
)

pytestmark = pytest.mark.usefixtures("no_leftovers")

# The agent and a child of its own in the same group, which must end too.
GROUP = 'echo \'{"type":"started"}\'; sleep 30 & wait'


def group_alive(pgid: int) -> bool:
    """Some process of the group still runs (a zombie awaiting its reaper does not)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        running = []
        for proc in psutil.process_iter(["status"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(proc.pid) == pgid and proc.info["status"] != "zombie":
                    running.append(proc.pid)
        if not running:
            return False
        time.sleep(0.05)
    return True


def test_a_lost_lease_ends_the_group_seals_the_stream_and_reports_nothing(
    worker: Worker,
) -> None:
    worker.on_broker(assign(shell(GROUP)), NOW)
    assert worker.execution is not None and worker.execution.proc is not None
    pgid = worker.execution.proc.pid
    printed = read_events(worker, 1)
    assert worker.on_broker(m.LeaseLost(execution=1), NOW) == []
    out = run_agent(worker)
    assert not group_alive(pgid)
    assert events_of(printed) == [b'{"type":"started"}']
    assert stream_end(out).last_seq >= 1  # what it printed is kept
    assert seal(worker, out) == []  # no Finished: the queue would refuse it
    assert worker.phase is Phase.IDLE and worker.execution is None and not worker.closings
    later = worker.step(NOW + RESEND_SECONDS + 1)
    assert to_broker(later, m.Finished) == []
    assert to_broker(later) == [m.Heartbeat(worker="w1", pid=4242)]  # idle: it holds nothing


def test_an_unsealed_stream_after_a_lost_lease_is_not_reported_either(worker: Worker) -> None:
    worker.on_broker(assign(shell("sleep 30")), NOW)
    worker.on_broker(m.LeaseLost(execution=1), NOW)
    run_agent(worker)
    assert worker.phase is Phase.IDLE and not worker.closings[1].sealed  # being sealed
    out = worker.step(NOW + SEAL_WAIT_SECONDS + 1)  # the recorder never answers
    assert to_broker(out, m.Finished) == []
    assert not worker.closings
    assert to_broker(worker.step(NOW + SEAL_WAIT_SECONDS + RESEND_SECONDS + 2), m.Finished) == []


def test_a_lost_lease_while_reporting_stops_the_resending(worker: Worker) -> None:
    worker.on_broker(assign(shell("true")), NOW)
    assert to_broker(seal(worker, run_agent(worker)), m.Finished)  # reported once
    assert worker.closings[1].sealed  # resent until acknowledged
    worker.on_broker(m.LeaseLost(execution=1), NOW)
    assert not worker.closings
    assert to_broker(worker.step(NOW + RESEND_SECONDS + 1), m.Finished) == []


def test_a_lost_lease_of_another_execution_changes_nothing(worker: Worker) -> None:
    worker.on_broker(assign(shell("true")), NOW)
    worker.on_broker(m.LeaseLost(execution=7), NOW)
    report = to_broker(seal(worker, run_agent(worker)), m.Finished)
    assert [r.outcome for r in report] == ["succeeded"]  # type: ignore[attr-defined]
