"""What the worker holds back to share a ZeroMQ message, and what it sends at once."""

from __future__ import annotations

import pytest

from fleetd.worker.logic import Worker
from fleetd.worker.outbox import (
    HOLD_BYTES,
    HOLD_SECONDS,
    NEXT_ASSIGN_SECONDS,
    Outbox,
    ToBroker,
    ToRecorder,
)
from shared import messages as m
from shared.models import ExecutionResult
from tests.unit.worker.drive import NOW, assign, run_agent, seal, shell

STARTED = ToBroker(m.AgentStarted(execution=2, started_at=1, pid=7), wait=True)
RESULT = ToBroker(
    m.Finished(execution=1, outcome="succeeded", result=ExecutionResult(), released=True), wait=True
)
FREE = ToBroker(m.WorkerFree(worker="w1", pid=4242, execution=2))
BATCH = ToRecorder(b"batch", wait=True)
END = ToRecorder(b"end", seals=2)


def test_what_may_wait_goes_with_the_next_urgent_message_to_its_peer_in_order() -> None:
    outbox = Outbox()
    assert outbox.take([STARTED, BATCH], NOW) == []
    assert outbox.take([RESULT], NOW + 0.001) == []
    # The agent's end: the StreamEnd takes the held batch, the WorkerFree what the broker
    # was owed, each peer's in one message and in the order made.
    assert outbox.take([END, FREE], NOW + 0.002) == [[STARTED, RESULT, FREE], [BATCH, END]]
    assert outbox.take([], NOW + 1) == []
    assert outbox.next_due == float("inf")


def test_an_urgent_message_goes_at_once_and_alone_when_nothing_is_held() -> None:
    assert Outbox().take([FREE], NOW) == [[FREE]]
    assert Outbox().take([END], NOW) == [[END]]


def test_held_messages_go_by_themselves_once_due() -> None:
    outbox = Outbox()
    outbox.take([STARTED], NOW)
    outbox.take([BATCH], NOW + 0.005)
    assert outbox.next_due == pytest.approx(NOW + HOLD_SECONDS)  # from the first one held
    assert outbox.take([], NOW + HOLD_SECONDS / 2) == []
    assert outbox.take([], NOW + HOLD_SECONDS) == [[STARTED]]
    assert outbox.take([], NOW + 0.005 + HOLD_SECONDS) == [[BATCH]]


def test_a_chatty_agents_batches_go_once_they_add_up() -> None:
    outbox = Outbox()
    big = ToRecorder(b"x" * (HOLD_BYTES // 2), wait=True)
    assert outbox.take([big], NOW) == []
    assert outbox.take([big], NOW) == [[big, big]]


def test_flush_sends_everything_held() -> None:
    outbox = Outbox()
    outbox.take([STARTED, BATCH], NOW)
    assert outbox.flush() == [[STARTED], [BATCH]]
    assert outbox.flush() == []


@pytest.mark.usefixtures("no_leftovers")
def test_the_worker_marks_what_may_wait(worker: Worker) -> None:
    out = worker.on_broker(assign(shell("echo '{}'"), execution=1), NOW)
    [started] = [o for o in out if isinstance(o, ToBroker)]
    assert isinstance(started.message, m.AgentStarted) and started.wait
    first = run_agent(worker)
    batches = [o for o in first if isinstance(o, ToRecorder) and o.seals is None]
    assert batches and all(o.wait for o in batches)
    beat = lambda o: isinstance(o, ToBroker) and isinstance(o.message, m.Heartbeat)  # noqa: E731
    urgent = [o for o in first if not o.wait and not beat(o)]
    assert [type(o) for o in urgent] == [ToRecorder, ToBroker]  # the StreamEnd, the WorkerFree
    # Reported while the next agent runs: the result may wait for that agent's messages.
    worker.on_broker(assign(shell("sleep 30"), task=2, execution=2), NOW)
    [report] = [o for o in seal(worker, first) if isinstance(o, ToBroker)]
    assert isinstance(report.message, m.Finished) and report.wait
    worker.on_broker(m.CancelExecution(execution=2), NOW)
    second = run_agent(worker)
    # With no agent running, a result waits only as long as the next Assign takes.
    [report] = [o for o in seal(worker, second) if isinstance(o, ToBroker)]
    assert isinstance(report.message, m.Finished) and report.message.released
    assert report.wait and report.hold == pytest.approx(NEXT_ASSIGN_SECONDS)
    worker.on_broker(m.FinishAck(execution=1), NOW)
    worker.on_broker(m.FinishAck(execution=2), NOW)
    # A stopping worker's result (unreleased) goes at once.
    worker.on_broker(assign(shell("sleep 30"), task=3, execution=3), NOW)
    worker.stop(NOW)
    [report] = [o for o in seal(worker, run_agent(worker)) if isinstance(o, ToBroker)]
    assert isinstance(report.message, m.Finished) and not report.wait


def test_the_shortest_hold_among_held_messages_decides_when_they_go() -> None:
    outbox = Outbox()
    outbox.take([STARTED], NOW)
    short = ToBroker(RESULT.message, wait=True, hold=NEXT_ASSIGN_SECONDS)
    assert outbox.take([short], NOW + 0.001) == []
    assert outbox.next_due == pytest.approx(NOW + 0.001 + NEXT_ASSIGN_SECONDS)
    assert outbox.take([], NOW + 0.001 + NEXT_ASSIGN_SECONDS) == [[STARTED, short]]


def test_a_result_held_for_the_next_assign_waits_for_that_agents_end_once_it_runs() -> None:
    outbox = Outbox()
    short = ToBroker(RESULT.message, wait=True, hold=NEXT_ASSIGN_SECONDS)
    assert outbox.take([short], NOW) == []  # idle: the Assign is awaited
    assert outbox.take([STARTED], NOW + 0.001, agent_running=True) == []  # it came
    assert outbox.take([], NOW + 0.005, agent_running=True) == []  # past the short hold
    assert outbox.take([FREE], NOW + 0.006, agent_running=False) == [[short, STARTED, FREE]]
    outbox.take([short], NOW)
    assert outbox.take([], NOW + NEXT_ASSIGN_SECONDS) == [[short]]  # no Assign: it goes


def test_a_result_goes_by_its_not_after_while_the_next_agent_runs() -> None:
    late = ToBroker(RESULT.message, wait=True, not_after=NOW + 0.005)
    outbox = Outbox()
    assert outbox.take([late], NOW, agent_running=True) == []
    # The running agent's extension (since + HOLD_SECONDS) stops at `not_after`.
    assert outbox.next_due == pytest.approx(NOW + 0.005)
    assert outbox.take([], NOW + 0.004, agent_running=True) == []
    assert outbox.take([], NOW + 0.005, agent_running=True) == [[late]]
