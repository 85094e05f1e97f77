"""The supervisor's memory stays bounded under storms of control connections: what a storm
makes it allocate is given back once the storm has passed, round after round."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest
import zmq

from shared import messages as m
from tests.support.fleet import Fleet, running_fleet, wait_for

pytestmark = pytest.mark.timeout(300)

ROUNDS = 6
CONNECTIONS = 4000
MB = 1 << 20


@pytest.fixture
def one_worker_fleet() -> Iterator[Fleet]:
    with running_fleet("--workers", "1") as fleet:
        yield fleet


def _storm(fleet: Fleet, connections: int) -> None:
    """`connections` clients at once, each asking for the status once, then all gone."""
    context = zmq.Context()
    context.set(zmq.MAX_SOCKETS, connections + 16)
    request = m.CONTROL_REQUESTS.encode(m.GetStatus())
    clients = []
    try:
        for _ in range(connections):
            client = context.socket(zmq.DEALER)
            client.setsockopt(zmq.LINGER, 0)
            client.setsockopt(zmq.RCVTIMEO, 60_000)
            client.connect(f"ipc://{fleet.state_dir / 'fleetd.sock'}")
            client.send(request)
            clients.append(client)
        for client in clients:
            assert isinstance(m.CONTROL_REPLIES.decode(client.recv()), m.Status)
    finally:
        for client in clients:
            client.close()
        context.term()


def test_rss_is_flat_after_the_second_round_of_connections(one_worker_fleet: Fleet) -> None:
    supervisor = psutil.Process(one_worker_fleet.pid)
    rss = []
    for _ in range(ROUNDS):
        _storm(one_worker_fleet, CONNECTIONS)
        if len(rss) < 2:
            rss.append(wait_for(lambda: supervisor.memory_info().rss, what="the RSS"))
            continue
        bound = rss[1] + 20 * MB
        rss.append(
            wait_for(
                lambda b=bound: (r := supervisor.memory_info().rss) <= b and r,
                timeout=15,
                what=f"the supervisor's RSS to come back under {bound // MB} MB (rounds: "
                f"{[r // MB for r in rss]} MB, now {supervisor.memory_info().rss // MB} MB)",
            )
        )
