"""Nodes sharing a PostgreSQL queue: each broker's heartbeat (its workers) is what the others
show for it, with when it was heard of and whether that is longer ago than a lease."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.broker.logic import Broker
from fleetd.stores.postgres import PgQueueStore
from shared import messages as m
from shared.config import load_config
from tests.unit.broker.test_broker import CLIENT, LEASE_US, enqueue, ready

pytestmark = pytest.mark.postgres


@pytest.fixture
def two_nodes(pg_url: str, tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    stores = [PgQueueStore.open(pg_url, 3, node=name, wait=False) for name in ("host-a", "host-b")]
    brokers = tuple(
        Broker(store, load_config({"HOME": str(tmp_path), "FLEET_NODE_NAME": store.node}))
        for store in stores
    )
    yield brokers  # type: ignore[misc]
    for store in stores:
        store.close()


def listed(broker: Broker, now: int) -> list[tuple[str | None, str, str, bool]]:
    [reply] = broker.handle(CLIENT, b"w", m.ListWorkers(), now)
    return [(w.node, w.id, w.state, w.lost) for w in reply.message.workers]


def test_each_node_shows_the_others_workers_and_their_liveness(
    two_nodes: tuple[Broker, Broker],
) -> None:
    a, b = two_nodes
    ready(a, "w1")
    ready(a, "w2")
    enqueue(a, "x", now=1)
    ready(b, "w1")
    a.step(2)  # the lease check beats the node's workers into the store
    b.step(3)
    assert listed(b, 4) == [
        ("host-b", "w1", "idle", False),
        ("host-a", "w1", "busy", False),
        ("host-a", "w2", "idle", False),
    ]
    [counts] = b.handle(CLIENT, b"c", m.GetCounts(), 4)
    assert [w.node for w in counts.message.workers] == ["host-b"]  # its own, for drain
    assert [(w.node, w.id) for w in counts.message.other_workers] == [
        ("host-a", "w1"),
        ("host-a", "w2"),
    ]
    # host-a goes silent: past a lease, host-b shows it lost.
    b.step(2 + LEASE_US + 1)
    assert [row for row in listed(b, 2 + LEASE_US + 1) if row[0] == "host-a"] == [
        ("host-a", "w1", "busy", True),
        ("host-a", "w2", "idle", True),
    ]
