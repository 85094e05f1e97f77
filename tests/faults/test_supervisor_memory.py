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


def test_a_client_that_never_reads_cannot_queue_unbounded_replies(
    one_worker_fleet: Fleet,
) -> None:
    fleet = one_worker_fleet
    prompt = "p" * 20_000
    tasks = [m.TaskSpec(prompt=prompt, agent="command", argv=["true"]) for _ in range(100)]
    assert isinstance(fleet.request(m.Enqueue(tasks=tasks)), m.Enqueued)
    listing = m.CONTROL_REQUESTS.encode(m.ListTasks(limit=100))  # a 2 MB reply
    supervisor = psutil.Process(fleet.pid)
    context = zmq.Context()
    hostile = context.socket(zmq.DEALER)
    hostile.setsockopt(zmq.LINGER, 0)
    hostile.setsockopt(zmq.RCVHWM, 1)  # it holds nothing itself: the queue is fleetd's
    hostile.setsockopt(zmq.RCVBUF, 4096)
    hostile.connect(f"ipc://{fleet.state_dir / 'fleetd.sock'}")
    try:
        for _ in range(3):
            fleet.status()
        before = supervisor.memory_info().rss
        for _ in range(150):
            hostile.send(listing)
        for _ in range(3):  # answered in turn after the hostile requests were read
            fleet.status()
        grown = (supervisor.memory_info().rss - before) // MB
        assert grown < 60, f"the supervisor grew {grown} MB for replies nobody reads"
    finally:
        hostile.close()
        context.term()
