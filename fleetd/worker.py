"""The worker process: takes one task at a time from the broker, runs its agent, reports back.

A run's life: Assign -> agent running (events to the spool and the recorder) -> agent done ->
StreamEnd, wait for StreamSealed (bounded) -> Finished, resent until FinishAck -> idle.
A Finished that is acknowledged also tells the broker this worker is free.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path

import zmq
from loguru import logger

from fleetd.agentproc import AgentRegistry
from fleetd.agents.base import Adapter
from fleetd.agents.codex import CodexAdapter
from fleetd.agents.command import CommandAdapter
from fleetd.lines import Redactor
from fleetd.process import ShutdownSignal, child_start
from fleetd.run import Run
from fleetd.spool import SpoolWriter
from shared import messages as m
from shared.config import FleetConfig
from shared.errors import FleetError
from shared.models import RunResult, TaskSpec

SEAL_WAIT_SECONDS = 10.0
RESEND_SECONDS = 2.0


def agent_environment(config: FleetConfig, host: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment: only the allow-listed host variables."""
    return {name: host[name] for name in config.worker.env_allow if name in host}


class Worker:
    """The worker's state machine; the loop feeds it socket messages, fd events and time."""

    def __init__(
        self,
        config: FleetConfig,
        worker_id: str,
        broker: zmq.Socket,
        recorder: zmq.Socket,
        host_env: Mapping[str, str],
    ) -> None:
        self.config = config
        self.id = worker_id
        self.pid = os.getpid()
        self.paths = config.paths()
        self.broker = broker
        self.recorder = recorder
        self.env = agent_environment(config, host_env)
        secrets = [host_env[n] for n in config.worker.secret_env if host_env.get(n)]
        self.redactor = Redactor(secrets)
        self.registry = AgentRegistry(self.paths.agents_dir)
        self.adapters: dict[str, Adapter] = {
            "codex": CodexAdapter(config.codex),
            "command": CommandAdapter(),
        }
        self.broker_codec = m.broker_request_codec()
        self.run: Run | None = None
        self.phase = "idle"  # idle | running | sealing | reporting
        self.finished: m.Finished | None = None
        self.phase_deadline = float("inf")
        self.next_heartbeat = 0.0
        self.stopping = False

    # --- sending -----------------------------------------------------------------------------

    def _to_broker(self, message: m.Message) -> None:
        with contextlib.suppress(zmq.Again):
            self.broker.send_multipart([b"", self.broker_codec.encode(message)], zmq.NOBLOCK)

    def _to_recorder(self, payload: bytes) -> bool:
        """Best effort: the spool already holds the events, the recorder fills gaps from it."""
        try:
            self.recorder.send_multipart([b"", payload], zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def announce(self) -> None:
        self._to_broker(m.Ready(worker=self.id, pid=self.pid))

    def heartbeat(self, now: float) -> None:
        if now < self.next_heartbeat:
            return
        self.next_heartbeat = now + self.config.worker.heartbeat_seconds
        execution = self.run.assign.execution if self.run is not None else None
        self._to_broker(m.Heartbeat(worker=self.id, pid=self.pid, execution=execution))

    # --- broker messages -------------------------------------------------------------------

    def on_broker(self, message: m.Message, now: float) -> None:
        match message:
            case m.Assign():
                self._on_assign(message, now)
            case m.CancelExecution(execution=execution):
                if self.run is not None and self.run.assign.execution == execution:
                    logger.info("cancelling execution {}", execution)
                    self.run.end("cancelled", now)
            case m.FinishAck(execution=execution):
                if self.finished is not None and self.finished.execution == execution:
                    self._become_idle()
            case m.ErrorReply(message=text):
                logger.warning("broker error: {}", text)

    def _on_assign(self, assign: m.Assign, now: float) -> None:
        if self.run is not None:
            logger.error("assigned execution {} while busy; refusing", assign.execution)
            refusal = m.Finished(
                execution=assign.execution,
                outcome="interrupted",
                result=RunResult(error="worker was busy"),
            )
            self._to_broker(refusal)
            return
        spool = SpoolWriter(self.paths.spool_file(assign.execution))
        run = Run(
            assign=assign,
            spool=spool,
            redactor=self.redactor,
            max_line=self.config.worker.max_line_bytes,
            grace=self.config.worker.grace_seconds,
            stderr_path=self.paths.stderr_file(assign.execution),
            registry=self.registry,
        )
        self.run = run
        self.phase = "running"
        if self.stopping:
            run.end("interrupted", now)
            return
        try:
            command = self.adapters[assign.spec.agent].command(
                assign.spec, self._workdir(assign), dict(self.env)
            )
        except FleetError as exc:
            run.error = str(exc)
            return
        run.start(command, assign.spec.timeout or self.config.worker.timeout_seconds)
        if run.proc is not None:
            started = m.AgentStarted(
                execution=assign.execution, started_at=run.started_at, pid=run.proc.pid
            )
            self._to_broker(started)
            logger.debug("execution {} started pid {}", assign.execution, run.proc.pid)

    def _workdir(self, assign: m.Assign) -> Path:
        spec: TaskSpec = assign.spec
        if spec.cwd is not None:
            path = Path(spec.cwd)
            if not path.is_dir():
                raise FleetError(f"working directory {spec.cwd} does not exist")
            return path
        scratch = self.paths.scratch_dir / str(assign.execution)
        scratch.mkdir(mode=0o700, exist_ok=True)
        return scratch

    # --- recorder messages -------------------------------------------------------------------

    def on_recorder(self, message: m.Message) -> None:
        if (
            isinstance(message, m.StreamSealed)
            and self.phase == "sealing"
            and self.run is not None
            and message.execution == self.run.assign.execution
        ):
            if message.last_seq < self.run.seq and self.finished is not None:
                self.finished = _cut_short(self.finished, message.last_seq, self.run.seq)
            self._report()

    # --- the run -----------------------------------------------------------------------------

    def on_run_fd(self, fd: int, now: float) -> None:
        if self.run is None or self.phase != "running":
            return
        for batch in self.run.on_fd(fd, now):
            self._to_recorder(batch)

    def tick(self, now: float) -> None:
        """Timers: heartbeats, run limits, seal and resend deadlines; end-of-run detection."""
        self.heartbeat(now)
        run = self.run
        if run is None:
            return
        if self.phase == "running":
            run.on_timer(now)
            if run.done:
                self._seal(run)
        elif now >= self.phase_deadline:
            if self.phase == "sealing":
                logger.warning(
                    "recorder did not seal execution {} in time; it will ingest the spool later",
                    run.assign.execution,
                )
                self._report()
            elif self.phase == "reporting" and self.finished is not None:
                self._to_broker(self.finished)
                self.phase_deadline = now + RESEND_SECONDS

    def _seal(self, run: Run) -> None:
        batches, outcome, result = run.finish()
        for batch in batches:
            self._to_recorder(batch)
        self.finished = m.Finished(execution=run.assign.execution, outcome=outcome, result=result)
        end = m.StreamEnd(
            task=run.assign.task,
            execution=run.assign.execution,
            last_seq=run.seq,
            spool=str(run.spool.path),
        )
        self._remove_empty_scratch(run)
        self.phase = "sealing"
        self.phase_deadline = time.monotonic() + SEAL_WAIT_SECONDS
        if not self._to_recorder(m.recorder_request_codec().encode(end)):
            self._report()

    def _report(self) -> None:
        assert self.run is not None and self.finished is not None
        # Closing the spool frees its lock: if the recorder missed the end, its sweep takes it.
        self.run.close_spool()
        self.phase = "reporting"
        self.phase_deadline = time.monotonic() + RESEND_SECONDS
        self._to_broker(self.finished)

    def _become_idle(self) -> None:
        self.run = None
        self.finished = None
        self.phase = "idle"
        self.phase_deadline = float("inf")

    def _remove_empty_scratch(self, run: Run) -> None:
        if run.assign.spec.cwd is None:
            with contextlib.suppress(OSError):
                (self.paths.scratch_dir / str(run.assign.execution)).rmdir()

    def stop(self, now: float) -> None:
        """The fleet is stopping: end the agent (its task goes back to the queue), then exit."""
        self.stopping = True
        if self.run is not None and self.phase == "running":
            self.run.end("interrupted", now)

    def next_timeout(self, now: float) -> float:
        """Seconds until the next timer is due."""
        due = [self.next_heartbeat, self.phase_deadline]
        if self.run is not None and self.phase == "running":
            due.append(self.run.next_deadline())
        return max(0.0, min(due) - now)

    @property
    def can_exit(self) -> bool:
        return self.stopping and self.phase == "idle"


def _cut_short(finished: m.Finished, stored: int, printed: int) -> m.Finished:
    """The recorder could not store the whole stream (a full disk): the run cannot succeed."""
    result = finished.result
    lost = f"events {stored + 1} to {printed} could not be stored (disk full)"
    result.error = f"{result.error}; {lost}" if result.error else lost
    outcome = "failed" if finished.outcome == "succeeded" else finished.outcome
    return m.Finished(execution=finished.execution, outcome=outcome, result=result)


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
    broker_codec = m.broker_reply_codec()
    recorder_codec = m.recorder_reply_codec()
    poller = zmq.Poller()
    poller.register(worker.broker, zmq.POLLIN)
    poller.register(worker.recorder, zmq.POLLIN)
    poller.register(shutdown.fd, zmq.POLLIN)
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
