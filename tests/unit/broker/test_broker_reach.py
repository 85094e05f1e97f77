"""A node that cannot reach its queue's database: the broker waits out a short outage, and past
a lease it tells each of its busy workers `LeaseLost` (once), since its leases have expired and
other nodes may run those tasks now. Socket-free: the store is the real SQLite one, behind a
switch that makes each call fail as an unreachable PostgreSQL does (`StoreUnavailable`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetd.broker.logic import LEASE_CHECK_INTERVAL_US, Broker
from fleetd.broker.reach import Reach
from fleetd.broker.store import QueueStore
from fleetd.runtime.routing import ToPeer
from fleetd.stores.errors import StoreUnavailable
from shared import messages as m
from shared.config import load_config
from tests.unit.broker.test_broker import CLIENT, LEASE_US, enqueue, finished, ready


class Unplugged:
    """The store, or (while `down`) a database that does not answer."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store
        self.down = False
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.down:
                raise StoreUnavailable("PostgreSQL at db:5432/fleet cannot be reached")
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def plug(store: QueueStore) -> Unplugged:
    return Unplugged(store)


@pytest.fixture
def node(plug: Unplugged, tmp_path: Path) -> Broker:
    config = load_config({"HOME": str(tmp_path), "FLEET_NODE_NAME": "host-a"})
    return Broker(plug, config)  # type: ignore[arg-type]


def busy_node(node: Broker) -> None:
    ready(node, "w1")
    ready(node, "w2")
    enqueue(node, "a", "b", now=1)
    node.step(2)  # a lease check that reached the database
    assert {w.state for w in node.workers.values()} == {"busy"}


def lease_checks(node: Broker, start: int, end: int) -> list[ToPeer]:
    out = []
    for now in range(start, end, LEASE_CHECK_INTERVAL_US):
        out += node.step(now)
    return out


def test_past_a_lease_without_the_database_each_busy_worker_loses_its_lease_once(
    node: Broker, plug: Unplugged
) -> None:
    busy_node(node)
    plug.down = True
    assert lease_checks(node, 3, 2 + LEASE_US) == []  # within a lease: wait it out
    assert node.reach.phase is Reach.UNREACHABLE
    out = lease_checks(node, 2 + LEASE_US, 2 + LEASE_US + 3 * LEASE_CHECK_INTERVAL_US)
    assert sorted((o.peer, o.message) for o in out) == [
        (b"w1", m.LeaseLost(execution=1)),
        (b"w2", m.LeaseLost(execution=2)),
    ]
    assert node.reach.phase is Reach.LOST
    plug.down = False
    node.step(3 * LEASE_US)
    assert node.reach.phase is Reach.REACHABLE


def test_a_short_outage_stops_nothing(node: Broker, plug: Unplugged) -> None:
    busy_node(node)
    plug.down = True
    assert lease_checks(node, 3, LEASE_US // 2) == []
    plug.down = False
    node.step(LEASE_US // 2 + 1)
    plug.down = True
    # Counted from the last success: another half lease is no lease without the database.
    assert lease_checks(node, LEASE_US // 2 + 2, LEASE_US) == []
    assert node.reach.phase is Reach.UNREACHABLE


def test_requests_during_an_outage_are_answered_unavailable_or_left_to_be_resent(
    node: Broker, plug: Unplugged
) -> None:
    busy_node(node)
    plug.down = True
    [reply] = node.handle(CLIENT, b"r", m.ListTasks(), 3)
    assert isinstance(reply.message, m.ErrorReply) and reply.message.code == "unavailable"
    assert "cannot be reached" in reply.message.message
    assert finished(node, 1, now=4) == []  # the worker resends it until it is acked
    heartbeat = m.Heartbeat(worker="w2", pid=100, execution=2)
    assert node.handle(b"w2", b"", heartbeat, 5) == []
    plug.down = False
    assert finished(node, 1, now=6) == []  # until a lease check reaches the database again
    node.step(2 + LEASE_CHECK_INTERVAL_US)
    [ack] = finished(node, 1, now=3 + LEASE_CHECK_INTERVAL_US)
    assert ack.message == m.FinishAck(execution=1)


def test_while_unreachable_worker_reports_do_not_wait_on_the_database(
    node: Broker, plug: Unplugged
) -> None:
    """Each call would block on the dead link in turn, holding back the LeaseLost the loop
    owes the workers: only the lease check probes the database."""
    busy_node(node)
    plug.down = True
    node.step(2 + LEASE_CHECK_INTERVAL_US)  # the lease check finds it unreachable
    calls = plug.calls
    heartbeat = m.Heartbeat(worker="w2", pid=100, execution=2)
    for now in range(10, 20):
        assert node.handle(b"w2", b"", heartbeat, now) == []
    assert finished(node, 1, now=21) == []
    assert plug.calls == calls


def test_workers_carry_their_node(node: Broker) -> None:
    busy_node(node)
    [reply] = node.handle(CLIENT, b"w", m.ListWorkers(), 3)
    assert {(w.id, w.node) for w in reply.message.workers} == {("w1", "host-a"), ("w2", "host-a")}


def test_executions_carry_the_node_that_claimed_them(tmp_path: Path) -> None:
    store = QueueStore.open(tmp_path / "n.db", 3, node="host-b")
    try:
        config = load_config({"HOME": str(tmp_path), "FLEET_NODE_NAME": "host-b"})
        broker = Broker(store, config)
        ready(broker, "w1")
        enqueue(broker, "a", now=1)
        [reply] = broker.handle(CLIENT, b"s", m.ShowTask(task=1), 2)
        assert [e.node for e in reply.message.task.executions] == ["host-b"]
        from shared.views import task_json

        assert task_json(reply.message.task, True)["executions"][0]["node"] == "host-b"
    finally:
        store.close()
