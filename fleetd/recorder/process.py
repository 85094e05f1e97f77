"""The recorder process: its ROUTER inbox, its PUB feed and poll loop around the `Recorder`."""

from __future__ import annotations

import zmq
from loguru import logger

from fleetd.recorder.logic import Outgoing, Phase, Publish, Recorder
from fleetd.runtime.lifecycle import ShutdownSignal, child_start
from fleetd.runtime.routing import Request, ToPeer, by_peer, read_requests
from fleetd.runtime.sockets import new_socket, waiting
from fleetd.stores.events import open_event_store
from shared import messages as m
from shared.config import FleetConfig
from shared.models import now_us

POLL_MS = 500
HWM = 100_000


def run(config: FleetConfig) -> None:
    """The recorder process's entry point (started by the supervisor)."""
    shutdown = child_start("recorder", "fleetd: recorder", config.log_level, config.log_json)
    paths = config.paths()
    log = open_event_store(config)
    recorder = Recorder(log, paths, config.recorder.batch_max)
    context = zmq.Context()
    inbox = new_socket(context, zmq.ROUTER, linger_ms=1000, hwm=HWM)
    inbox.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted worker takes its identity back
    inbox.bind(paths.recorder_endpoint)
    feed = new_socket(context, zmq.PUB, linger_ms=0, hwm=HWM)
    feed.bind(paths.feed_endpoint)
    logger.info("recorder ready on {}", paths.recorder_endpoint)
    try:
        _loop(recorder, inbox, feed, shutdown)
    finally:
        context.destroy()  # each socket closes with its own linger
        log.close()
    logger.info("recorder stopped")


def _loop(
    recorder: Recorder, inbox: zmq.Socket, feed: zmq.Socket, shutdown: ShutdownSignal
) -> None:
    poller = zmq.Poller()
    poller.register(inbox, zmq.POLLIN)
    poller.register(shutdown.fd, zmq.POLLIN)
    while recorder.phase is not Phase.STOPPED:
        events = dict(poller.poll(POLL_MS if recorder.phase is Phase.RUNNING else 0))
        if shutdown.fd in events:
            shutdown.drain()
            recorder.stop()
        out: list[Outgoing] = []
        for frames in waiting(inbox):
            out += _serve(recorder, frames)
            if recorder.full:
                break
        out += recorder.step(now_us())
        replies: list[ToPeer] = []
        for item in out:
            if isinstance(item, Publish):
                feed.send_multipart([m.feed_topic(item.task), item.payload])
            else:
                replies.append(item)
        for group in by_peer(replies):
            encoded = [m.RECORDER_REPLIES.encode(item.message) for item in group]
            inbox.send_multipart([group[0].peer, group[0].ref, *encoded])


def _serve(recorder: Recorder, frames: list[bytes]) -> list[Outgoing]:
    out: list[Outgoing] = []
    for request in read_requests(frames, m.RECORDER_REQUESTS, "recorder"):
        if not isinstance(request, Request):
            out.append(request)
            continue
        try:
            out += recorder.handle(
                request.peer, request.ref, request.message, request.raw, now_us()
            )
        except Exception:  # one request must not end the recorder: its sender hears of it
            logger.exception("recorder failed serving {}", type(request.message).__name__)
            reply = m.ErrorReply(code="internal", message="the recorder failed; see the fleetd log")
            out.append(ToPeer(request.peer, request.ref, reply))
    return out
