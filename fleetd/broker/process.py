"""The broker process: its ROUTER socket and poll loop around the `Broker` state machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import islice

import zmq
from loguru import logger

from fleetd.broker.logic import Broker
from fleetd.runtime.lifecycle import ShutdownSignal, child_start
from fleetd.runtime.routing import Request, ToPeer, by_peer, read_requests
from fleetd.runtime.sockets import new_socket, waiting
from fleetd.stores import open_queue_store
from fleetd.stores.protocol import QueueStoreAPI, StoreUnavailable
from shared import messages as m
from shared.config import FleetConfig
from shared.errors import FleetError
from shared.models import now_us

RECV_BATCH = 256
OUTAGE_HOLD_S = 1.0
POLL_MS = 200


def run(config: FleetConfig, recover: bool) -> None:
    """The broker process's entry point (started by the supervisor)."""
    shutdown = child_start("broker", "fleetd: broker", config.log_level, config.log_json)
    paths = config.paths()
    patience = OutagePatience(shutdown)
    try:
        # A PostgreSQL outage at start is waited out here (until a stop signal).
        store = open_queue_store(config, node=config.node.name, stop=patience)
    except FleetError as exc:  # stopped while waiting, or a schema newer than this fleetd
        logger.error("{}", exc)
        return
    broker = Broker(store, config)
    if recover:
        broker.recover("fleetd stopped without ending this run", now_us())
    patience.running(lambda: getattr(getattr(store, "db", None), "down_since", None))
    context = zmq.Context()
    sock = new_socket(context, zmq.ROUTER, linger_ms=1000, hwm=100_000)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted worker takes its identity back
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unreachable worker is an error, not a drop
    sock.setsockopt(zmq.MAXMSGSIZE, 256 * 1024 * 1024)
    sock.bind(paths.broker_endpoint)
    logger.info("broker ready on {}", paths.broker_endpoint)
    try:
        _loop(broker, store, sock, shutdown)
    except StoreUnavailable as exc:  # told to stop while the database was out
        logger.warning("broker stopping during an outage: {}", exc)
    finally:
        context.destroy()  # each socket closes with its own linger
        store.close()
    logger.info("broker stopped")


class OutagePatience:
    """How long a store call waits out an unreachable database (`Database.run`'s `stop`).

    At start, as long as it takes (a broker that gave up would crash, be restarted into the
    same outage and trip the crash-loop limit); once running, OUTAGE_HOLD_S, then the call
    fails with StoreUnavailable and the loop goes on: the broker counts the outage against
    its leases (`fleetd.broker.reach`) and workers keep being heard. A shutdown ends any wait.
    """

    def __init__(self, shutdown: ShutdownSignal) -> None:
        self.shutdown = shutdown
        self.down_since: Callable[[], float | None] = lambda: None

    def running(self, down_since: Callable[[], float | None]) -> None:
        self.down_since = down_since

    def __call__(self) -> bool:
        if self.shutdown.received is not None:
            return True
        since = self.down_since()
        return since is not None and time.monotonic() - since > OUTAGE_HOLD_S


def _loop(broker: Broker, store: QueueStoreAPI, sock: zmq.Socket, shutdown: ShutdownSignal) -> None:
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(shutdown.fd, zmq.POLLIN)
    wakeup_fd = None
    while shutdown.received is None:
        wakeup_fd = _watch_wakeups(poller, wakeup_fd, store.wakeup_fd())
        events = dict(poller.poll(POLL_MS))
        if shutdown.fd in events:
            shutdown.drain()
        # Another node's enqueue or finish (PostgreSQL's NOTIFY): claim now, not at a poll.
        # Asked every turn, fd or not: a listener that lost its connection reconnects here.
        if store.drain_wakeups():
            broker.wake()
        out: list[ToPeer] = []
        for frames in islice(waiting(sock), RECV_BATCH):
            out.extend(_serve(broker, frames))
        out.extend(broker.step(now_us()))
        for group in by_peer(out):
            _send(broker, sock, group)


def _watch_wakeups(poller: zmq.Poller, watched: int | None, current: int | None) -> int | None:
    """Poll the store's wake-up fd, the new one after it reconnected."""
    if current != watched:
        if watched is not None:
            poller.unregister(watched)
        if current is not None:
            poller.register(current, zmq.POLLIN)
    return current


def _serve(broker: Broker, frames: list[bytes]) -> list[ToPeer]:
    out: list[ToPeer] = []
    requests: list[m.Message] = []
    for request in read_requests(frames, m.BROKER_REQUESTS, "broker"):
        if isinstance(request, Request):
            requests.append(request.message)
        else:
            out.append(request)  # undecodable: its sender hears why
    if requests:
        out += broker.handle_all(frames[0], frames[1], requests, now_us())
    return out


def _send(broker: Broker, sock: zmq.Socket, group: list[ToPeer]) -> None:
    """One ZeroMQ message to one peer: its identity, the reference, a frame per message."""
    first = group[0]
    frames = [first.peer, first.ref, *(m.BROKER_REPLIES.encode(item.message) for item in group)]
    try:
        sock.send_multipart(frames)
    except zmq.ZMQError as exc:
        if exc.errno != zmq.EHOSTUNREACH:
            raise
        for outgoing in group:
            # The message's name only: its fields may hold a task's prompt.
            kind = type(outgoing.message).__name__
            logger.warning("peer {} unreachable; {} not delivered", outgoing.peer, kind)
            broker.undeliverable(outgoing, now_us())
