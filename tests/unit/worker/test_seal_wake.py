"""A seal wakes the worker only when it is waited for, or late (`Worker.wakes_for_recorder`):
when a result then reaches the broker, against the bound it had when every seal woke the loop
(read on arrival, then held NEXT_ASSIGN_SECONDS while free, HOLD_SECONDS while the next agent
runs), and the ZeroMQ poll semantics the loop relies on (a socket polled only at times and
read at every turn)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq

from fleetd.runtime.sockets import waiting
from fleetd.worker.closing import SEAL_LOOK_SECONDS
from fleetd.worker.logic import Phase, ToBroker, Worker
from fleetd.worker.outbox import HOLD_SECONDS, NEXT_ASSIGN_SECONDS, Outbox, Outgoing
from shared import messages as m
from tests.support.gitrepo import new_repo
from tests.unit.worker.drive import NOW, assign, finished, run_agent, seal, shell, to_broker

pytestmark = [pytest.mark.usefixtures("no_leftovers"), pytest.mark.timeout(60)]

SLEEPER = "sleep 30"
EPSILON = 1e-9


def _read_at(worker: Worker, arrival: float) -> float:
    """When the loop reads a seal that arrived at `arrival`: at once if it polls the recorder
    then, else at its next timer turn (it reads the recorder at every turn)."""
    if worker.wakes_for_recorder(arrival):
        return arrival
    return arrival + worker.next_timeout(arrival)


def _sent_at(outbox: Outbox, out: list[Outgoing], now: float, running: bool) -> float:
    """When the broker gets the Finished in `out`: now, or when the outbox lets it go."""
    groups = outbox.take(out, now, agent_running=running)
    sent = [i for g in groups for i in g if isinstance(i, ToBroker)]
    return now if any(isinstance(i.message, m.Finished) for i in sent) else outbox.next_due


@pytest.mark.parametrize("delay", [0.0005, 0.0019, 0.003, 0.5])
def test_a_lone_result_reaches_the_broker_no_later_than_before(
    worker: Worker, delay: float
) -> None:
    worker.step(NOW)  # the first heartbeat
    worker.on_broker(assign(shell("echo '{}'"), execution=1), NOW)
    first = run_agent(worker)
    outbox = Outbox()
    outbox.take(first, NOW)  # the StreamEnd and the WorkerFree go
    arrival = NOW + delay
    read_at = _read_at(worker, arrival)
    sent_at = _sent_at(outbox, seal(worker, first, read_at), read_at, running=False)
    assert sent_at <= arrival + NEXT_ASSIGN_SECONDS + EPSILON
    worker.on_broker(m.FinishAck(execution=1), sent_at)


def test_a_result_behind_a_running_agent_reaches_the_broker_no_later_than_before(
    worker: Worker,
) -> None:
    """The broker's held messages went out meanwhile (a heartbeat took the next agent's
    AgentStarted): a seal read at its look time (SEAL_LOOK_SECONDS after the end) must not be
    held HOLD_SECONDS from then (SEAL_LOOK_SECONDS later than on arrival): `not_after`."""
    worker.step(NOW)
    worker.on_broker(assign(shell("echo '{}'"), execution=1), NOW)
    first = run_agent(worker)
    outbox = Outbox()
    outbox.take(first, NOW)
    outbox.take(worker.on_broker(assign(shell(SLEEPER), task=2, execution=2), NOW), NOW, True)
    beat_at = NOW + 0.001
    worker.next_heartbeat = beat_at  # a heartbeat takes the held AgentStarted along
    assert outbox.take(worker.step(beat_at), beat_at, agent_running=True)
    arrival = NOW + 0.002
    read_at = _read_at(worker, arrival)
    assert read_at == pytest.approx(NOW + SEAL_LOOK_SECONDS)
    sent_at = _sent_at(outbox, seal(worker, first, read_at), read_at, running=True)
    try:
        # Before: read on arrival, held at most HOLD_SECONDS behind the running agent.
        assert sent_at <= arrival + HOLD_SECONDS + EPSILON, sent_at - arrival
    finally:
        worker.on_broker(m.FinishAck(execution=1), read_at)
        worker.on_broker(m.CancelExecution(execution=2), read_at)
        finished(seal(worker, run_agent(worker, read_at), read_at))


def test_a_seal_arriving_while_preparing_is_read_on_arrival_and_frees_the_next_end(
    worker: Worker, tmp_path: Path
) -> None:
    repo = new_repo(tmp_path / "repo", {"a.txt": "one\n"})
    worker.on_broker(assign(shell("echo '{}'"), execution=1), NOW)
    first = run_agent(worker)
    worker.on_broker(assign(shell(SLEEPER, repo=str(repo)), task=2, execution=2), NOW)
    assert worker.phase is Phase.PREPARING
    assert worker.wakes_for_recorder(NOW)  # the seal is read on arrival, as before
    [report] = [o for o in seal(worker, first) if isinstance(o, ToBroker)]
    assert report.wait and report.hold == HOLD_SECONDS  # goes with what the next run sends
    worker.on_job_done(NOW)
    assert worker.phase is Phase.RUNNING
    worker.on_broker(m.CancelExecution(execution=2), NOW)
    run_agent(worker)
    assert worker.phase is Phase.COMMITTING and worker.wakes_for_recorder(NOW)
    second = worker.on_job_done(NOW)
    assert to_broker(second, m.WorkerFree)  # the first stream was sealed: released
    worker.on_broker(m.FinishAck(execution=1), NOW)
    finished(seal(worker, second))


def test_a_socket_registered_after_its_message_came_wakes_the_poll_at_once() -> None:
    """The loop polls the recorder only at times and drains it every turn: zmq.Poller must be
    level-triggered for a socket registered with a message already waiting."""
    context = zmq.Context()
    try:
        router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
        for sock in (router, dealer):
            sock.setsockopt(zmq.LINGER, 0)
        router.bind("inproc://review")
        dealer.setsockopt(zmq.IDENTITY, b"w1")
        dealer.connect("inproc://review")
        dealer.send_multipart([b"", b"hello"])
        assert router.poll(2000)
        [peer, _, _] = router.recv_multipart()
        router.send_multipart([peer, b"", b"sealed"])
        assert dealer.poll(2000)  # it came (and the FD's edge is spent)
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        started = time.monotonic()
        assert dict(poller.poll(2000)).get(dealer) == zmq.POLLIN
        assert time.monotonic() - started < 0.5
        assert list(waiting(dealer)) == [[b"", b"sealed"]]
        poller.unregister(dealer)
        router.send_multipart([peer, b"", b"again"])
        assert dealer.poll(2000)
        assert list(waiting(dealer)) == [[b"", b"again"]]  # drained without a poll
        poller.register(dealer, zmq.POLLIN)
        assert poller.poll(50) == []  # nothing left: no spurious wake
    finally:
        context.destroy(linger=0)
