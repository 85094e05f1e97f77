"""The worker process: its sockets and poll loop around the `Worker` state machine."""

from __future__ import annotations

import math
import os
import time
from typing import TypeVar

import zmq

from fleetd.runtime.lifecycle import ShutdownSignal, child_start
from fleetd.runtime.sockets import new_socket, waiting
from fleetd.worker.logic import Worker
from fleetd.worker.outbox import Outbox, Outgoing, ToBroker, ToRecorder
from shared import messages as m
from shared.config import FleetConfig

LINGER_MS = 2000  # a Finished or the last events still get out when the worker exits
HWM = 100_000
MAX_POLL_MS = 1000

P = TypeVar("P", int, zmq.Socket)  # what a poller polls: an fd, or a ZeroMQ socket


def run(config: FleetConfig, role: str, worker_id: str) -> None:
    """A worker process's entry point (started by the supervisor as `role`, e.g. `worker 3`)."""
    shutdown = child_start(role, f"fleetd: {role}", config.log_level, config.log_json)
    paths = config.paths()
    context = zmq.Context()
    broker = new_socket(
        context, zmq.DEALER, linger_ms=LINGER_MS, hwm=HWM, identity=worker_id.encode()
    )
    broker.connect(paths.broker_endpoint)
    recorder = new_socket(
        context, zmq.DEALER, linger_ms=LINGER_MS, hwm=HWM, identity=worker_id.encode()
    )
    recorder.connect(paths.recorder_endpoint)
    worker = Worker(config, worker_id, dict(os.environ))
    try:
        _loop(worker, broker, recorder, shutdown)
    finally:
        worker.close()
        context.destroy()  # each socket closes with its own linger


def _loop(
    worker: Worker, broker: zmq.Socket, recorder: zmq.Socket, shutdown: ShutdownSignal
) -> None:
    poller = zmq.Poller()
    for fd in (broker, shutdown.fd, worker.job.fd):
        poller.register(fd, zmq.POLLIN)
    agent_fds: set[int] = set()
    recorder_polled: set[zmq.Socket] = set()
    outbox = Outbox()
    _send(worker, broker, recorder, outbox.take(worker.start(time.monotonic()), time.monotonic()))
    while not worker.can_exit:
        now = time.monotonic()
        agent_fds = _sync_polled(poller, set(worker.fds(now)), agent_fds)
        wanted = {recorder} if worker.wakes_for_recorder(now) else set()
        recorder_polled = _sync_polled(poller, wanted, recorder_polled)
        timeout = min(worker.next_timeout(now), outbox.next_due - now)
        events = dict(poller.poll(_poll_ms(timeout)))
        now = time.monotonic()
        out: list[Outgoing] = []
        if shutdown.fd in events:
            shutdown.drain()
            out += worker.stop(now)
        if broker in events:
            for frames in waiting(broker):
                for message in _decode(m.BROKER_REPLIES, frames):
                    out += worker.on_broker(message, now)
        # Read at every turn, woken for or not (see Worker.wakes_for_recorder).
        for frames in waiting(recorder):
            for message in _decode(m.RECORDER_REPLIES, frames):
                out += worker.on_recorder(message, now)
        if worker.job.fd in events:
            out += worker.on_job_done(now)
        for fd in agent_fds:
            if fd in events:  # a pipe the pidfd's drain closed is ignored by the execution
                out += worker.on_agent_fd(fd, now)
        now = time.monotonic()
        out += worker.step(now)
        running = worker.execution is not None
        _send(worker, broker, recorder, outbox.take(out, now, agent_running=running))
    _send(worker, broker, recorder, outbox.flush())


def _send(
    worker: Worker, broker: zmq.Socket, recorder: zmq.Socket, groups: list[list[Outgoing]]
) -> None:
    """Send each group as one ZeroMQ message, a frame per message, without blocking; what the
    recorder cannot take, the worker is told of (the spool holds every event batch already).
    A full broker queue drops the message: heartbeats and resends repeat what matters."""
    pending = list(groups)
    while pending:
        group = pending.pop(0)  # one peer's: all ToBroker, or all ToRecorder
        try:
            if isinstance(group[0], ToBroker):
                messages = [i.message for i in group if isinstance(i, ToBroker)]
                frames = [m.BROKER_REQUESTS.encode(message) for message in messages]
                broker.send_multipart([b"", *frames], zmq.NOBLOCK)
            else:
                frames = [i.payload for i in group if isinstance(i, ToRecorder)]
                recorder.send_multipart([b"", *frames], zmq.NOBLOCK)
        except zmq.Again:
            if not isinstance(group[0], ToBroker):
                for item in group:
                    pending += [[again] for again in worker.undeliverable(item, time.monotonic())]


def _poll_ms(seconds: float) -> int:
    """A poll timeout in whole milliseconds, rounded up: pyzmq truncates, and a timer due in
    less than a millisecond made poll(0) turns until it passed."""
    return min(MAX_POLL_MS, math.ceil(max(0.0, seconds) * 1000))


def _sync_polled(poller: zmq.Poller, wanted: set[P], registered: set[P]) -> set[P]:
    """Poll what is `wanted` (fds or sockets) of what `registered` held; what is polled now."""
    for gone in registered - wanted:
        poller.unregister(gone)
    for new in wanted - registered:
        poller.register(new, zmq.POLLIN)
    return wanted


def _decode(codec: m.Codec, frames: list[bytes]) -> list[m.Message]:
    """The messages of one ZeroMQ message: its frames after the empty delimiter."""
    messages: list[m.Message] = []
    for frame in frames[1:]:
        try:
            messages.append(codec.decode(frame))
        except Exception as exc:
            messages.append(m.ErrorReply(code="bad_request", message=f"undecodable message: {exc}"))
    return messages
