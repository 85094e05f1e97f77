"""The worker process: its sockets and poll loop around the `Worker` state machine."""

from __future__ import annotations

import os
import time

import zmq

from fleetd.runtime.lifecycle import ShutdownSignal, child_start
from fleetd.runtime.sockets import new_socket, waiting
from fleetd.worker.logic import Outgoing, ToBroker, Worker
from shared import messages as m
from shared.config import FleetConfig

LINGER_MS = 2000  # a Finished or the last events still get out when the worker exits
HWM = 100_000
MAX_POLL_MS = 1000


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
    for fd in (broker, recorder, shutdown.fd, worker.job.fd):
        poller.register(fd, zmq.POLLIN)
    agent_fds: set[int] = set()
    _send(worker, broker, recorder, worker.start(time.monotonic()))
    while not worker.can_exit:
        agent_fds = _sync_fds(poller, set(worker.fds()), agent_fds)
        timeout_ms = worker.next_timeout(time.monotonic()) * 1000
        events = dict(poller.poll(min(timeout_ms, MAX_POLL_MS) + 0.5))
        now = time.monotonic()
        out: list[Outgoing] = []
        if shutdown.fd in events:
            shutdown.drain()
            out += worker.stop(now)
        if broker in events:
            for frames in waiting(broker):
                out += worker.on_broker(_decode(m.BROKER_REPLIES, frames), now)
        if recorder in events:
            for frames in waiting(recorder):
                out += worker.on_recorder(_decode(m.RECORDER_REPLIES, frames), now)
        if worker.job.fd in events:
            out += worker.on_job_done(now)
        for fd in agent_fds:
            if fd in events:
                out += worker.on_agent_fd(fd, now)
        out += worker.step(time.monotonic())
        _send(worker, broker, recorder, out)


def _send(worker: Worker, broker: zmq.Socket, recorder: zmq.Socket, out: list[Outgoing]) -> None:
    """Send without blocking; what the recorder cannot take, the worker is told of (the spool
    holds every event batch already). A full broker queue drops the message: heartbeats and
    resends repeat what matters."""
    pending = list(out)
    while pending:
        item = pending.pop(0)
        try:
            if isinstance(item, ToBroker):
                broker.send_multipart([b"", m.BROKER_REQUESTS.encode(item.message)], zmq.NOBLOCK)
            else:
                recorder.send_multipart([b"", item.payload], zmq.NOBLOCK)
        except zmq.Again:
            if not isinstance(item, ToBroker):
                pending += worker.undeliverable(item, time.monotonic())


def _sync_fds(poller: zmq.Poller, wanted: set[int], registered: set[int]) -> set[int]:
    for fd in registered - wanted:
        poller.unregister(fd)
    for fd in wanted - registered:
        poller.register(fd, zmq.POLLIN)
    return wanted


def _decode(codec: m.Codec, frames: list[bytes]) -> m.Message:
    try:
        return codec.decode(frames[-1])
    except Exception as exc:
        return m.ErrorReply(code="bad_request", message=f"undecodable message: {exc}")
