"""Stop and drain, phase by phase, with time passed explicitly and children that a test ends."""

from __future__ import annotations

import pytest

from fleetd.supervisor.shutdown import DRAIN_POLL_SECONDS, Phase, Shutdown
from shared import messages as m
from shared.models import WorkerView
from tests.unit.supervisor.fakes import KILL, TERM, FakeChildren, FakeNotifier

STOP_TIMEOUT = 10.0


class Leftovers:
    """Counts calls of the 'end the agents a dead worker left' hook."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return 0


@pytest.fixture
def children() -> FakeChildren:
    return FakeChildren(workers=2)


@pytest.fixture
def notifier() -> FakeNotifier:
    return FakeNotifier()


@pytest.fixture
def leftovers() -> Leftovers:
    return Leftovers()


@pytest.fixture
def shutdown(children: FakeChildren, notifier: FakeNotifier, leftovers: Leftovers) -> Shutdown:
    return Shutdown(STOP_TIMEOUT, children, notifier, leftovers)


def counts(running: int = 0, busy: int = 0) -> m.QueueCounts:
    workers = [WorkerView(id=f"w{i}", pid=None, state="busy", since=0) for i in range(busy)]
    return m.QueueCounts(counts={"running": running}, workers=workers, dispatching=False)


def test_a_running_fleet_is_not_stopping(shutdown: Shutdown) -> None:
    assert shutdown.phase is Phase.RUNNING
    assert shutdown.stopping is None
    assert shutdown.advance(0.0) == []
    assert not shutdown.drain_poll_due(0.0)


# --- stop ------------------------------------------------------------------------------------


def test_stop_pauses_dispatch_and_terms_the_workers(
    shutdown: Shutdown, children: FakeChildren, notifier: FakeNotifier
) -> None:
    assert shutdown.stop(None, "stop request", 0.0) == [m.SetDispatch(dispatching=False)]
    assert shutdown.phase is Phase.STOPPING and shutdown.stopping == "stopping"
    assert children.signals == [("worker 1", TERM), ("worker 2", TERM)]
    assert notifier.sent == ["STOPPING stopping (stop request)"]


def test_stop_waits_for_the_workers_then_closes_the_broker_and_recorder(
    shutdown: Shutdown, children: FakeChildren
) -> None:
    shutdown.stop(None, "stop request", 0.0)
    children.exit("worker 1")
    assert shutdown.advance(1.0) == []
    assert shutdown.phase is Phase.STOPPING
    children.exit("worker 2")
    assert shutdown.advance(2.0) == []
    assert shutdown.phase is Phase.CLOSING
    assert children.signals[-2:] == [("recorder", TERM), ("broker", TERM)]
    children.exit("recorder", "broker")
    shutdown.advance(2.5)
    assert shutdown.phase is Phase.DONE


def test_the_web_process_is_ended_with_the_broker_and_recorder() -> None:
    children = FakeChildren(workers=1, clients=("web",))
    shutdown = Shutdown(STOP_TIMEOUT, children, FakeNotifier(), Leftovers())
    shutdown.stop(None, "stop request", 0.0)
    assert ("web", TERM) not in children.signals  # it serves the dashboard while workers stop
    children.exit("worker 1")
    shutdown.advance(1.0)
    assert children.signals[-3:] == [("web", TERM), ("recorder", TERM), ("broker", TERM)]
    children.exit("recorder", "broker", "web")
    shutdown.advance(2.5)
    assert shutdown.phase is Phase.DONE


def test_workers_that_outlive_the_stop_deadline_are_killed_and_reported_lost(
    shutdown: Shutdown, children: FakeChildren, leftovers: Leftovers
) -> None:
    shutdown.stop(None, "stop request", 0.0)
    children.exit("worker 1")
    deadline = max(STOP_TIMEOUT * 0.8, STOP_TIMEOUT - 2.0)  # 8 s: 2 s are left for closing
    assert shutdown.advance(deadline - 0.01) == []
    out = shutdown.advance(deadline)
    assert children.signalled(KILL) == ["worker 2"]
    assert leftovers.calls == 1
    assert out == [m.WorkerGone(worker="w2", reason="fleet stop timed out while this task ran")]
    children.exit("worker 2")
    shutdown.advance(deadline + 0.1)
    assert shutdown.phase is Phase.CLOSING


def test_a_client_role_is_ended_before_the_recorder_and_broker(notifier: FakeNotifier) -> None:
    children = FakeChildren(workers=1, clients=("tracker",))
    shutdown = Shutdown(STOP_TIMEOUT, children, notifier, Leftovers())
    shutdown.stop(None, "stop request", 0.0)
    children.exit("worker 1")
    shutdown.advance(1.0)
    assert children.signals[-3:] == [("tracker", TERM), ("recorder", TERM), ("broker", TERM)]
    children.exit("recorder", "broker")
    shutdown.advance(2.0)
    assert shutdown.phase is Phase.CLOSING  # until the tracker is gone too
    children.exit("tracker")
    shutdown.advance(2.5)
    assert shutdown.phase is Phase.DONE


def test_the_broker_and_recorder_are_killed_past_the_close_deadline(
    shutdown: Shutdown, children: FakeChildren
) -> None:
    shutdown.stop(None, "stop request", 0.0)
    children.exit("worker 1", "worker 2")
    shutdown.advance(1.0)
    assert shutdown.phase is Phase.CLOSING
    shutdown.advance(STOP_TIMEOUT - 0.01)
    assert children.signalled(KILL) == []
    shutdown.advance(STOP_TIMEOUT)
    assert children.signalled(KILL) == ["broker", "recorder"]
    children.exit("broker", "recorder")
    shutdown.advance(STOP_TIMEOUT + 0.1)
    assert shutdown.phase is Phase.DONE


def test_closing_gets_at_least_a_second_even_at_the_end_of_the_bound(
    shutdown: Shutdown, children: FakeChildren
) -> None:
    shutdown.stop(2.0, "stop request", 0.0)
    children.exit("worker 1", "worker 2")
    shutdown.advance(1.9)  # the workers went just before the bound
    shutdown.advance(2.5)
    assert children.signalled(KILL) == []
    shutdown.advance(2.9)
    assert children.signalled(KILL) == ["broker", "recorder"]


def test_a_stop_timeout_given_with_the_request_bounds_the_stop(
    shutdown: Shutdown, children: FakeChildren
) -> None:
    shutdown.stop(1.0, "stop request", 0.0)
    shutdown.advance(0.79)
    assert children.signalled(KILL) == []
    shutdown.advance(0.8)
    assert children.signalled(KILL) == ["worker 1", "worker 2"]


@pytest.mark.parametrize("phase", [Phase.STOPPING, Phase.CLOSING, Phase.DONE])
def test_a_second_stop_changes_nothing(
    shutdown: Shutdown, children: FakeChildren, phase: Phase
) -> None:
    shutdown.stop(None, "first", 0.0)
    if phase is not Phase.STOPPING:
        children.exit("worker 1", "worker 2")
        shutdown.advance(0.1)
    if phase is Phase.DONE:
        children.exit("broker", "recorder")
        shutdown.advance(0.2)
    signals = list(children.signals)
    assert shutdown.stop(1.0, "second", 5.0) == []
    assert shutdown.phase is phase
    assert children.signals == signals
    assert shutdown.stop_deadline == max(STOP_TIMEOUT * 0.8, STOP_TIMEOUT - 2.0)


# --- drain -------------------------------------------------------------------------------------


def test_drain_pauses_dispatch_and_polls_the_broker(
    shutdown: Shutdown, children: FakeChildren, notifier: FakeNotifier
) -> None:
    assert shutdown.drain() == [m.SetDispatch(dispatching=False)]
    assert shutdown.phase is Phase.DRAINING and shutdown.stopping == "draining"
    assert notifier.sent == ["STATUS draining"]
    assert children.signals == []  # running agents go on
    assert shutdown.drain_poll_due(0.0)
    assert not shutdown.drain_poll_due(DRAIN_POLL_SECONDS / 2)
    assert shutdown.drain_poll_due(DRAIN_POLL_SECONDS)


def test_drain_waits_while_tasks_run_then_stops(shutdown: Shutdown, children: FakeChildren) -> None:
    shutdown.drain()
    assert shutdown.on_counts(counts(running=1, busy=1), 1.0) == []
    assert shutdown.on_counts(counts(running=0, busy=1), 2.0) == []  # a report on its way
    assert shutdown.phase is Phase.DRAINING
    assert shutdown.on_counts(counts(), 3.0) == [m.SetDispatch(dispatching=False)]
    assert shutdown.phase is Phase.STOPPING
    assert children.signalled(TERM) == ["worker 1", "worker 2"]


def test_a_second_drain_changes_nothing(shutdown: Shutdown, notifier: FakeNotifier) -> None:
    shutdown.drain()
    assert shutdown.drain() == []
    assert notifier.sent == ["STATUS draining"]


def test_stop_while_draining_stops(shutdown: Shutdown, children: FakeChildren) -> None:
    shutdown.drain()
    shutdown.stop(None, "stop request", 1.0)
    assert shutdown.phase is Phase.STOPPING
    assert not shutdown.drain_poll_due(5.0)
    assert shutdown.on_counts(counts(), 5.0) == []  # a late poll answer is ignored


def test_drain_while_stopping_changes_nothing(shutdown: Shutdown) -> None:
    shutdown.stop(None, "stop request", 0.0)
    assert shutdown.drain() == []
    assert shutdown.phase is Phase.STOPPING
