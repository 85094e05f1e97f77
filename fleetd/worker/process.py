"""The worker process: its sockets and its poll loop around the `Worker` state machine."""

from __future__ import annotations

import os
import time

import zmq

from fleetd.runtime.lifecycle import ShutdownSignal, child_start
from fleetd.worker.logic import Worker
from shared import messages as m
from shared.config import FleetConfig


def run(config: FleetConfig, index: int) -> None:
    """A worker process's entry point (started by the supervisor)."""
    worker_id = f"w{index}"
    shutdown = child_start(
        f"worker {index}", f"fleetd: worker {index}", config.log_level, config.log_json
    )
    paths = config.paths()
    context = zmq.Context()
    broker = _dealer(context, worker_id, paths.broker_endpoint)
    recorder = _dealer(context, worker_id, paths.recorder_endpoint)
    worker = Worker(config, worker_id, broker, recorder, dict(os.environ))
    try:
        _loop(worker, shutdown)
    finally:
        worker.job.close()
        broker.close()
        recorder.close()
        context.term()


def _dealer(context: zmq.Context, identity: str, endpoint: str) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity.encode())
    sock.setsockopt(zmq.LINGER, 2000)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.connect(endpoint)
    return sock


def _loop(worker: Worker, shutdown: ShutdownSignal) -> None:
    broker_codec = m.BROKER_REPLIES
    recorder_codec = m.RECORDER_REPLIES
    poller = zmq.Poller()
    poller.register(worker.broker, zmq.POLLIN)
    poller.register(worker.recorder, zmq.POLLIN)
    poller.register(shutdown.fd, zmq.POLLIN)
    poller.register(worker.job.fd, zmq.POLLIN)
    run_fds: set[int] = set()
    worker.announce()
    while not worker.can_exit:
        run_fds = _sync_fds(poller, worker, run_fds)
        timeout_ms = worker.next_timeout(time.monotonic()) * 1000
        events = dict(poller.poll(min(timeout_ms, 1000) + 0.5))
        now = time.monotonic()
        if shutdown.fd in events:
            shutdown.drain()
            worker.stop(now)
        if worker.broker in events:
            for frames in _drain(worker.broker):
                worker.on_broker(_decode(broker_codec, frames), now)
        if worker.recorder in events:
            for frames in _drain(worker.recorder):
                worker.on_recorder(_decode(recorder_codec, frames))
        if worker.job.fd in events:
            worker.on_job_done()
        for fd in run_fds:
            if fd in events:
                worker.on_run_fd(fd, now)
        worker.tick(time.monotonic())


def _sync_fds(poller: zmq.Poller, worker: Worker, registered: set[int]) -> set[int]:
    wanted = (
        set(worker.run.fds()) if worker.run is not None and worker.phase == "running" else set()
    )
    for fd in registered - wanted:
        poller.unregister(fd)
    for fd in wanted - registered:
        poller.register(fd, zmq.POLLIN)
    return wanted


def _drain(sock: zmq.Socket) -> list[list[bytes]]:
    out = []
    while True:
        try:
            out.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return out


def _decode(codec: m.Codec, frames: list[bytes]) -> m.Message:
    try:
        return codec.decode(frames[-1])
    except Exception as exc:
        return m.ErrorReply(code="bad_request", message=f"undecodable message: {exc}")
