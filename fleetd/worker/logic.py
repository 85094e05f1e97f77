"""The worker: takes one task at a time from the broker, runs its agent, reports back.

A run's life: Assign -> [a repository task's worktree prepared on a helper thread] -> agent
running (events to the spool and the recorder) -> agent done -> [its work committed on the
helper thread] -> StreamEnd, wait for StreamSealed (bounded) -> Finished, resent until
FinishAck -> idle.
A Finished that is acknowledged also tells the broker this worker is free.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import zmq
from loguru import logger

from fleetd.agents.base import Adapter
from fleetd.agents.codex import CodexAdapter
from fleetd.agents.codex_home import PrivateHomes, host_codex_home
from fleetd.agents.command import CommandAdapter
from fleetd.runtime.agent_registry import AgentRegistry
from fleetd.runtime.background import BackgroundJob
from fleetd.runtime.locks import FileLock
from fleetd.runtime.spool import SpoolWriter
from fleetd.worker.execution import Run
from fleetd.worker.output import Redactor
from fleetd.workspace.worktrees import HookRun, Prepared, WorkspaceError, Workspaces, commit_message
from shared import messages as m
from shared.config import FleetConfig, agent_environment
from shared.errors import FleetError
from shared.models import RunResult, TaskSpec, WorkspaceResult

SEAL_WAIT_SECONDS = 10.0
RESEND_SECONDS = 2.0


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
        self.codex_homes = PrivateHomes(
            self.paths.codex_homes_dir,
            self.paths.sessions_dir,
            host_codex_home(host_env),
            lambda line: self.redactor.mask(line)[0],
        )
        self.adapters: dict[str, Adapter] = {
            "codex": CodexAdapter(config.codex),
            "command": CommandAdapter(),
        }
        self.workspaces = Workspaces(self.paths, config.workspace, self.env)
        self.job = BackgroundJob(f"{worker_id}-workspace")
        self.prepared: Prepared | None = None
        self.task_lock: FileLock | None = None
        self.unsealed: tuple[str, RunResult] | None = None  # outcome, result while collecting
        self.broker_codec = m.BROKER_REQUESTS
        self.run: Run | None = None
        self.phase = "idle"  # idle | preparing | running | collecting | sealing | reporting
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
                    self._end_run("cancelled", now)
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
        if assign.spec.repo is not None:
            self.phase = "preparing"
            self.task_lock = FileLock(self.paths.task_lock_file(assign.task))
            self.job.submit(self._prepare_workspace, assign, self.task_lock)
            return
        try:
            workdir = self._workdir(assign)
        except FleetError as exc:
            run.error = str(exc)
            return
        self._start_agent(run, workdir)

    def _prepare_workspace(self, assign: m.Assign, lock: FileLock) -> Prepared:
        """On the helper thread: wait out a gc of this worktree, then make it ready."""
        lock.acquire()
        assert assign.spec.repo is not None
        # A resumed thread continues in the worktree as the last attempt left it.
        fresh = assign.resume is None
        return self.workspaces.prepare(assign.task, assign.spec.repo, assign.spec.ref, fresh)

    def _on_prepared(self, prepared: Prepared | None, error: WorkspaceError | None) -> None:
        run = self.run
        assert run is not None
        self.phase = "running"
        self._record_hooks(run, prepared.hooks if prepared else error.hooks if error else [])
        if prepared is None:
            if run.end_reason is None:
                run.error = str(error)
            return  # no agent: the next tick seals the run
        self.prepared = prepared
        if run.end_reason is None:
            self._start_agent(run, prepared.path)

    def _record_hooks(self, run: Run, hooks: list[HookRun]) -> None:
        for batch in run.emit([(hook.event_line(), 0) for hook in hooks]):
            self._to_recorder(batch)

    def _start_agent(self, run: Run, workdir: Path) -> None:
        assign = run.assign
        try:
            resume_thread = assign.resume.thread_id if assign.resume else None
            command = self.adapters[assign.spec.agent].command(
                assign.spec, workdir, self._agent_env(assign), resume_thread
            )
        except (FleetError, OSError) as exc:
            run.error = str(exc)
            return
        worker_config = self.config.worker
        run.start(
            command,
            assign.spec.timeout or worker_config.timeout_seconds,
            assign.spec.idle_timeout or worker_config.idle_timeout_seconds,
        )
        if run.proc is not None:
            started = m.AgentStarted(
                execution=assign.execution, started_at=run.started_at, pid=run.proc.pid
            )
            self._to_broker(started)
            logger.debug("execution {} started pid {}", assign.execution, run.proc.pid)

    def _end_run(self, reason: str, now: float) -> None:
        """End the run's agent (or the workspace work in progress) for `reason`."""
        assert self.run is not None
        if self.phase == "preparing":
            self.workspaces.abort()
        self.run.end(reason, now)

    def _agent_env(self, assign: m.Assign) -> dict[str, str]:
        env = dict(self.env)
        if assign.spec.agent == "codex":
            session = None
            if assign.resume is not None:
                session = assign.resume.session_file
                if not session or not Path(session).is_file():
                    raise FleetError(
                        f"cannot resume: the Codex session of execution "
                        f"{assign.resume.execution} is gone; `fleetctl retry "
                        f"{assign.task}` (without --resume) starts over"
                    )
            env["CODEX_HOME"] = str(self.codex_homes.create(assign.execution, session))
        return env

    def _workdir(self, assign: m.Assign) -> Path:
        spec: TaskSpec = assign.spec
        if spec.cwd is not None:
            path = Path(spec.cwd)
            if not path.is_dir():
                raise FleetError(f"working directory {spec.cwd} does not exist")
            return path
        if assign.resume is not None:
            earlier = self.paths.scratch_dir / str(assign.resume.execution)
            if earlier.is_dir():
                return earlier  # the resumed thread's files are there
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
                self._agent_done(run)
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

    def _agent_done(self, run: Run) -> None:
        """The agent ended: keep its session, commit its work (in the background), then seal."""
        batches, outcome, result = run.finish()
        for batch in batches:
            self._to_recorder(batch)
        if run.assign.spec.agent == "codex":
            result.session_file = self.codex_homes.finish(run.assign.execution, result.thread_id)
        if self.prepared is not None and run.started:
            spec = run.assign.spec
            message = commit_message(run.assign.task, spec.prompt, result.final_message)
            self.unsealed = (outcome, result)
            self.phase = "collecting"
            self.job.submit(self._collect_workspace, run.assign.task, self.prepared, message)
            return
        self._seal(run, outcome, result)

    def _collect_workspace(
        self, task: int, prepared: Prepared, message: str
    ) -> tuple[WorkspaceResult, list[HookRun]]:
        """On the helper thread: commit the work; the kept patch gets its secrets masked."""
        result, hooks = self.workspaces.collect(task, prepared, message)
        if result.patch_file:
            patch = Path(result.patch_file)
            masked, changed = self.redactor.mask(patch.read_bytes())
            if changed:
                patch.write_bytes(masked)
        return result, hooks

    def _on_collected(self, future: Future[Any]) -> None:
        run = self.run
        assert run is not None and self.unsealed is not None
        outcome, result = self.unsealed
        self.unsealed = None
        try:
            result.workspace, hooks = future.result()
        except Exception as exc:  # WorkspaceError, or a bug: the worker lives on either way
            if not isinstance(exc, WorkspaceError):
                logger.opt(exception=exc).error("committing the task's work failed")
            hooks = getattr(exc, "hooks", [])
            # The agent's work is not on its branch: the attempt did not deliver.
            result.error = f"could not commit the task's work: {exc}"
            outcome = "failed" if outcome == "succeeded" else outcome
        self._record_hooks(run, hooks)
        self._seal(run, outcome, result)

    def on_job_done(self) -> None:
        """The helper thread finished preparing or collecting a workspace."""
        future = self.job.take()
        if future is None or self.run is None:
            return
        if self.phase == "preparing":
            try:
                self._on_prepared(future.result(), None)
            except WorkspaceError as exc:
                self._on_prepared(None, exc)
            except Exception as exc:  # a bug, or the OS: the attempt fails, the worker lives
                logger.exception("preparing the workspace failed")
                self._on_prepared(None, WorkspaceError(f"cannot prepare the workspace: {exc}"))
        elif self.phase == "collecting":
            self._on_collected(future)

    def _seal(self, run: Run, outcome: str, result: RunResult) -> None:
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
        if not self._to_recorder(m.RECORDER_REQUESTS.encode(end)):
            self._report()

    def _report(self) -> None:
        assert self.run is not None and self.finished is not None
        # Closing the spool frees its lock: if the recorder missed the end, its sweep takes it.
        self.run.close_spool()
        self.phase = "reporting"
        self.phase_deadline = time.monotonic() + RESEND_SECONDS
        self._to_broker(self.finished)

    def _become_idle(self) -> None:
        if self.task_lock is not None:
            self.task_lock.release()
            self.task_lock = None
        self.prepared = None
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
        if self.run is not None and self.phase in ("preparing", "running"):
            self._end_run("interrupted", now)

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
