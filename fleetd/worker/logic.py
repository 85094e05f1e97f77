"""The worker's logic, socket-free: messages, agent output and `now` in, outgoing messages out.

One agent at a time, through these phases:

    IDLE --Assign--> PREPARING (a repository task's worktree, on the helper thread)
         --> RUNNING (the agent; events to the spool, then the recorder)
         --> COMMITTING (a repository task's work committed, on the helper thread)
         --> IDLE, the attempt closing (`fleetd.worker.closing`): SEALING (StreamEnd sent;
             wait, bounded, for the recorder's StreamSealed), then REPORTING (Finished sent,
             resent until the broker's FinishAck, or the next Assign that acknowledges it)

While an attempt closes, the worker can run the next: when no other stream is still being
sealed, it tells the broker it is free (`WorkerFree`) as it sends the StreamEnd, and reports
the result after the seal; otherwise the broker hands it the next task with the result's
acknowledgement, as before. So at most two streams are sealed at once (beside results that
wait only for the broker's acknowledgement), and one agent runs.

PREPARING and COMMITTING happen only for tasks with a repository. An attempt that cannot
start (no such directory, no agent binary, a failed hook) goes through RUNNING with no agent
and fails with the reason. What follows the agent's end (the seal, the report, the heartbeat
that keeps closing attempts' leases) is `fleetd.worker.reporting`, a part of `Worker`. Its
process module (`fleetd.worker.process`) owns the sockets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from loguru import logger

from fleetd.agents import Adapters
from fleetd.agents.base import AdapterContext
from fleetd.runtime.agent_registry import AgentRecord
from fleetd.runtime.background import BackgroundJob, Job
from fleetd.runtime.locks import FileLock
from fleetd.runtime.redaction import Redactor
from fleetd.worker.attempt import Scratch, commit_work, prepare_workspace
from fleetd.worker.budget import run_budget
from fleetd.worker.closing import Closing, due_reports
from fleetd.worker.execution import EndReason, Execution
from fleetd.worker.outbox import Outgoing, ToBroker, ToRecorder
from fleetd.worker.output import OutputRest
from fleetd.worker.phase import Phase
from fleetd.worker.reporting import Reporting
from fleetd.workspace.errors import WorkspaceError
from fleetd.workspace.hooks import HookResult
from fleetd.workspace.worktrees import Prepared, Workspaces, commit_message
from shared import messages as m
from shared.config import FleetConfig, agent_environment
from shared.errors import FleetError
from shared.models import ExecutionResult, FinishedOutcome


class Worker(Reporting):
    """The worker's state machine; its process module feeds it and sends what it returns."""

    def __init__(
        self,
        config: FleetConfig,
        worker_id: str,
        host_env: Mapping[str, str],
        job: Job | None = None,
        pid: int | None = None,
    ) -> None:
        self.config = config
        self.id = worker_id
        self.pid = pid if pid is not None else os.getpid()
        self.paths = config.paths()
        self.env = agent_environment(config, host_env)
        self.redactor = Redactor(config.worker.secret_values(host_env))
        self.agent_record = AgentRecord(self.paths.agents_dir, self.pid)
        mask = lambda data: self.redactor.mask(data)[0]  # noqa: E731
        self.adapters = Adapters(AdapterContext("", config, self.paths, host_env, mask))
        self.workspaces = Workspaces(self.paths, config.workspace, self.env)
        self.scratch = Scratch(self.paths, worker_id)
        self.job: Job = job or BackgroundJob(f"{worker_id}-workspace")
        self.phase = Phase.IDLE
        self.next_heartbeat = 0.0
        self.stopping = False
        self.execution: Execution | None = None
        self.prepared: Prepared | None = None
        self.task_lock: FileLock | None = None
        self.ended: tuple[FinishedOutcome, ExecutionResult] | None = None  # while committing
        self.closings: dict[int, Closing] = {}  # attempts being sealed or reported, by execution
        self.fenced = False  # the running execution's lease was lost: it reports nothing

    # --- in ----------------------------------------------------------------------------------

    def start(self, now: float) -> list[Outgoing]:
        """Announce this worker: the broker forgets whatever it thought we held."""
        return [ToBroker(m.Ready(worker=self.id, pid=self.pid))]

    def on_broker(self, message: m.Message, now: float) -> list[Outgoing]:
        match message:
            case m.Assign(acknowledges=acknowledged):
                if acknowledged is not None:
                    self._on_finish_ack(acknowledged)
                return self._on_assign(message, now)
            case m.CancelExecution(execution=execution):
                if self.execution is not None and self.execution.assign.execution == execution:
                    self._cancel(now)
            case m.FinishAck(execution=execution):
                self._on_finish_ack(execution)
            case m.LeaseLost(execution=execution):
                return self._lease_lost(execution, now)
            case m.SteerExecution(execution=execution) | m.InterruptExecution(execution=execution):
                # Late (the agent ended, its stream sealed): nothing left to tell or record.
                running = self.execution if self.phase is Phase.RUNNING else None
                if running is not None and running.assign.execution == execution:
                    return _batches(running.tell(message, now))
            case m.ErrorReply(message=text):
                logger.warning("broker error: {}", text)
        return []

    def on_agent_fd(self, fd: int, now: float) -> list[Outgoing]:
        """One of the agent's pipes (or its pidfd) is readable."""
        if self.execution is None or self.phase is not Phase.RUNNING:
            return []
        return _batches(self.execution.on_fd(fd, now))

    def on_job_done(self, now: float) -> list[Outgoing]:
        """The helper thread finished preparing or committing a workspace."""
        future = self.job.take()
        if future is None or self.execution is None:
            return []
        if self.phase is Phase.PREPARING:
            return self._on_prepared(future, now)
        if self.phase is Phase.COMMITTING:
            return self._on_committed(future, now)
        return []

    def step(self, now: float) -> list[Outgoing]:
        """Timers: heartbeats, the agent's limits, seal and resend deadlines; the agent's end."""
        out = self._heartbeat(now)
        for closing in due_reports(self.closings.values(), now):
            if closing.sealed:
                out.append(ToBroker(closing.resend(now)))
            else:
                out += self._report(closing, now)
        execution = self.execution
        if execution is not None and self.phase is Phase.RUNNING:
            execution.on_timer(now)
            if execution.done:
                out += self._agent_done(execution, now)
        return out

    def stop(self, now: float) -> list[Outgoing]:
        """The fleet is stopping: end the agent (its task goes back to the queue), then exit."""
        self.stopping = True
        if self.execution is not None and self.phase in (Phase.PREPARING, Phase.RUNNING):
            self._end("interrupted", now)
        return []

    # --- what the loop asks ------------------------------------------------------------------

    def fds(self, now: float) -> list[int]:
        """The agent's fds to poll: only while it runs."""
        if self.execution is None or self.phase is not Phase.RUNNING:
            return []
        return self.execution.fds(now)

    def next_timeout(self, now: float) -> float:
        """Seconds until the next timer is due."""
        due = [self.next_heartbeat, *(closing.deadline for closing in self.closings.values())]
        if self.execution is not None and self.phase is Phase.RUNNING:
            due.append(self.execution.next_deadline(now))
        # When it starts waking for a seal it has not read yet.
        due += [t for t in self._seal_looks() or () if t > now]
        return max(0.0, min(due) - now)

    @property
    def can_exit(self) -> bool:
        return self.stopping and self.phase is Phase.IDLE and not self.closings

    def close(self) -> None:
        self.job.close()
        self.agent_record.close()

    # --- the attempt -------------------------------------------------------------------------

    def _on_assign(self, assign: m.Assign, now: float) -> list[Outgoing]:
        if self.execution is not None:
            logger.error("assigned execution {} while busy; refusing", assign.execution)
            refusal = m.Finished(
                execution=assign.execution,
                outcome="interrupted",
                result=ExecutionResult(error="worker was busy"),
                lease=assign.lease,
            )
            return [ToBroker(refusal)]
        worker = self.config.worker
        execution = Execution(
            assign=assign,
            spool_path=self.paths.spool_file(assign.execution),
            redactor=self.redactor,
            max_line=worker.max_line_bytes,
            grace=worker.grace_seconds,
            stderr_path=self.paths.stderr_file(assign.execution),
            agent_record=self.agent_record,
            summary=self.adapters.summary(assign),
            budget=run_budget(self.config, assign.spec),
            rest=OutputRest(worker.output_batch_ms / 1000),
        )
        self.execution = execution
        self.phase = Phase.RUNNING
        if self.stopping:
            execution.end("interrupted", now)
            return []
        if assign.spec.repo is not None:
            self.phase = Phase.PREPARING
            self.task_lock = FileLock(self.paths.task_lock_file(assign.task))
            self.job.submit(prepare_workspace, self.workspaces, assign, self.task_lock)
            return []
        try:
            workdir = self.scratch.workdir_for(assign)
        except FleetError as exc:
            execution.error = str(exc)
            return []
        return self._start_agent(execution, workdir, now)

    def _on_prepared(self, future: Future[Any], now: float) -> list[Outgoing]:
        execution = self.execution
        assert execution is not None
        self.phase = Phase.RUNNING
        try:
            prepared: Prepared = future.result()
        except Exception as exc:
            if not isinstance(exc, WorkspaceError):  # a bug, or the OS: the attempt fails
                logger.opt(exception=exc).error("preparing the workspace failed")
                exc = WorkspaceError(f"cannot prepare the workspace: {exc}")
            out = self._record_hooks(execution, exc.hooks, now)
            if execution.end_reason is None:
                execution.error = str(exc)
            return out  # no agent: the next step seals the execution
        out = self._record_hooks(execution, prepared.hooks, now)
        self.prepared = prepared
        if execution.end_reason is None:
            out += self._start_agent(execution, prepared.path, now)
        return out

    def _start_agent(self, execution: Execution, workdir: Path, now: float) -> list[Outgoing]:
        assign = execution.assign
        try:
            command = self.adapters[assign.spec.agent].command(assign, workdir, dict(self.env))
        except (FleetError, OSError, ValueError) as exc:
            execution.error = str(exc)
            return []
        except Exception as exc:  # a plug-in adapter's bug fails the attempt, not the worker
            logger.opt(exception=exc).error("agent adapter {!r} failed", assign.spec.agent)
            execution.error = f"the {assign.spec.agent!r} adapter failed: {exc!r}"
            return []
        limits = self.config.worker
        timeout = assign.spec.timeout or limits.timeout_seconds
        idle_timeout = assign.spec.idle_timeout or limits.idle_timeout_seconds
        batches = execution.start(command, timeout, idle_timeout, now)
        if execution.proc is None:
            return []
        logger.debug("execution {} started pid {}", assign.execution, execution.proc.pid)
        started = m.AgentStarted(
            execution=assign.execution,
            started_at=execution.started_at,
            pid=execution.proc.pid,
            lease=assign.lease,
        )
        # Held to go with the next message to the broker: for a short task, its WorkerFree.
        return [ToBroker(started, wait=True), *_batches(batches)]

    def _agent_done(self, execution: Execution, now: float) -> list[Outgoing]:
        """The agent ended: keep what a resume needs, commit its work (off the loop), seal."""
        batches, outcome, result = execution.finish(now)
        out: list[Outgoing] = _batches(batches)
        assign = execution.assign
        self.adapters.finish(assign, result)
        if self.prepared is not None and execution.started and not self.fenced:
            message = commit_message(assign.task, assign.spec.prompt, result.final_message)
            self.ended = (outcome, result)
            self.phase = Phase.COMMITTING
            work = (self.workspaces, self.redactor, assign.task, self.prepared, message)
            self.job.submit(commit_work, *work)
            return out
        return out + self._seal(execution, outcome, result, now)

    def _on_committed(self, future: Future[Any], now: float) -> list[Outgoing]:
        execution = self.execution
        assert execution is not None and self.ended is not None
        outcome, result = self.ended
        self.ended = None
        try:
            result.workspace, hooks = future.result()
        except Exception as exc:  # WorkspaceError, or a bug: the worker lives on either way
            if not isinstance(exc, WorkspaceError):
                logger.opt(exception=exc).error("committing the task's work failed")
            hooks = getattr(exc, "hooks", [])
            # The agent's work is not on its branch: the attempt did not deliver.
            result.error = f"could not commit the task's work: {exc}"
            outcome = "failed" if outcome == "succeeded" else outcome
        out = self._record_hooks(execution, hooks, now)
        return out + self._seal(execution, outcome, result, now)

    # --- helpers -----------------------------------------------------------------------------

    def _cancel(self, now: float) -> None:
        """A cancel reaches the agent while it is being prepared or runs; after, it is late."""
        assert self.execution is not None
        if self.phase in (Phase.PREPARING, Phase.RUNNING):
            logger.info("cancelling execution {}", self.execution.assign.execution)
            self._end("cancelled", now)
        else:  # committing: the agent ended already
            logger.info(
                "execution {} already ended; too late to cancel", self.execution.assign.execution
            )

    def _end(self, reason: EndReason, now: float) -> None:
        """End the agent (or the workspace step in progress) for `reason`."""
        assert self.execution is not None
        if self.phase is Phase.PREPARING:
            self.workspaces.abort()
        self.execution.end(reason, now)

    def _record_hooks(
        self, execution: Execution, hooks: list[HookResult], now: float
    ) -> list[Outgoing]:
        lines = [(hook.event_line(), 0) for hook in hooks]
        return _batches(execution.emit(lines, now))


def _batches(batches: list[bytes]) -> list[Outgoing]:
    """Event batches for the recorder: in the spool already, so they may wait a moment to go
    with the next message to the recorder (the stream's end, for a short task)."""
    return [ToRecorder(batch, wait=True) for batch in batches]
