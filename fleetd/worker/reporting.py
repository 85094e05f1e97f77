"""The worker's attempts from their agent's end to the broker's acknowledgement, beside its
core (`fleetd.worker.logic`): the StreamEnd and the recorder's seal, the result reported and
resent, the heartbeat that keeps their leases, a lost lease; and when a seal should wake the
loop. Socket-free, like the rest of the worker's logic."""

from __future__ import annotations

from loguru import logger

from fleetd.runtime.locks import FileLock
from fleetd.runtime.redaction import Redactor, mask_message
from fleetd.worker.attempt import Scratch, cut_short
from fleetd.worker.closing import SEAL_WAIT_SECONDS, Closing, held_executions
from fleetd.worker.execution import EndReason, Execution
from fleetd.worker.outbox import (
    HOLD_SECONDS,
    NEXT_ASSIGN_SECONDS,
    Outgoing,
    ToBroker,
    ToRecorder,
)
from fleetd.worker.phase import Phase
from fleetd.workspace.worktrees import Prepared
from shared import messages as m
from shared.config import FleetConfig
from shared.models import ExecutionResult, FinishedOutcome


class Reporting:
    """A part of `Worker`: its closing attempts (the state used is the Worker's)."""

    config: FleetConfig
    id: str
    pid: int
    phase: Phase
    stopping: bool
    next_heartbeat: float
    execution: Execution | None
    prepared: Prepared | None
    task_lock: FileLock | None
    closings: dict[int, Closing]
    fenced: bool
    redactor: Redactor
    scratch: Scratch

    def _end(self, reason: EndReason, now: float) -> None:
        raise NotImplementedError  # the Worker's

    def on_recorder(self, message: m.Message, now: float) -> list[Outgoing]:
        if not isinstance(message, m.StreamSealed):
            return []
        closing = self.closings.get(message.execution)
        if closing is None or closing.sealed:
            return []
        printed = closing.execution.seq
        if message.last_seq < printed:
            closing.finished = cut_short(closing.finished, message.last_seq, printed)
        return self._report(closing, now)

    def undeliverable(self, outgoing: Outgoing, now: float) -> list[Outgoing]:
        """The recorder could not take `outgoing`. Event batches wait in the spool; a StreamEnd
        that cannot be sent is not waited for: the run is reported (the sweep takes the spool)."""
        if not isinstance(outgoing, ToRecorder) or outgoing.seals is None:
            return []
        closing = self.closings.get(outgoing.seals)
        if closing is None or closing.sealed:
            return []
        return self._report(closing, now)

    def wakes_for_recorder(self, now: float) -> bool:
        """Whether the loop should wake for the recorder's replies; it reads them at every
        turn either way. A short task's seal came as a loop turn of its own (0.8 of ~2.8 turns
        per task), though the result it releases waits for the next Assign or the next
        agent's end, which wake the loop anyway: so a seal wakes it only when it is waited
        for (see `Closing.look_at`), or has waited past its time."""
        looks = self._seal_looks()
        return looks is None or any(now >= look for look in looks)

    def _seal_looks(self) -> list[float] | None:
        """When each closing's seal starts waking the loop; None while every seal does
        (stopping, or a workspace step on the helper thread)."""
        if self.stopping or self.phase not in (Phase.IDLE, Phase.RUNNING):
            return None
        running = self.phase is Phase.RUNNING
        return [c.look_at(running, NEXT_ASSIGN_SECONDS) for c in self.closings.values()]

    def closing_phase(self, execution: int) -> Phase | None:
        """SEALING or REPORTING for an attempt that is closing; None for any other."""
        closing = self.closings.get(execution)
        if closing is None:
            return None
        return Phase.REPORTING if closing.sealed else Phase.SEALING

    def _seal(
        self, execution: Execution, outcome: FinishedOutcome, result: ExecutionResult, now: float
    ) -> list[Outgoing]:
        """The agent's part is over: the attempt closes (sealed, then reported) beside the
        worker's next one; the broker hears the worker is free if no other stream is being
        sealed."""
        assign = execution.assign
        # Not while stopping (no next task comes), nor with another attempt still being sealed
        # (at most one stream is sealed behind a running agent). A released result reported
        # and not yet acknowledged does not count: it waits only for the broker's next answer,
        # and goes in the same message as this WorkerFree when the outbox held it (so the
        # broker stores it with this worker's next claim).
        released = not self.stopping and all(
            closing.sealed and closing.released for closing in self.closings.values()
        )
        # Errors may quote the spec (argv, cwd), which may hold a secret: stored masked.
        result = mask_message(result, self.redactor)
        finished = m.Finished(
            execution=assign.execution,
            outcome=outcome,
            result=result,
            released=released,
            lease=assign.lease,
        )
        end = m.StreamEnd(
            task=assign.task,
            execution=assign.execution,
            last_seq=execution.seq,
            spool=str(execution.spool_path),
        )
        self.scratch.release(assign)
        deadline = now + SEAL_WAIT_SECONDS
        closing = Closing(execution, finished, deadline, ended_at=now, task_lock=self.task_lock)
        closing.fenced, self.fenced = self.fenced, False
        self.closings[assign.execution] = closing
        self.task_lock = None
        self.prepared = None
        self.execution = None
        self.phase = Phase.IDLE
        out: list[Outgoing] = [ToRecorder(m.RECORDER_REQUESTS.encode(end), seals=assign.execution)]
        if released:
            free = m.WorkerFree(worker=self.id, pid=self.pid, execution=assign.execution)
            out.append(ToBroker(free))
        return out

    def _on_finish_ack(self, execution: int) -> None:
        closing = self.closings.pop(execution, None)
        if closing is not None:
            closing.done()

    def _heartbeat(self, now: float) -> list[Outgoing]:
        if now < self.next_heartbeat:
            return []
        self.next_heartbeat = now + self.config.worker.heartbeat_seconds
        running = self.execution.assign.execution if self.execution is not None else None
        execution, sealing = held_executions(running, self.closings.values())
        lease = self._lease_of(execution)
        beat = m.Heartbeat(
            worker=self.id, pid=self.pid, execution=execution, sealing=sealing, lease=lease
        )
        return [ToBroker(beat)]

    def _lease_of(self, execution: int | None) -> int | None:
        """The lease token of `execution` (running or closing): what the fence checks."""
        if self.execution is not None and self.execution.assign.execution == execution:
            return self.execution.assign.lease
        closing = self.closings.get(execution) if execution is not None else None
        return closing.execution.assign.lease if closing is not None else None

    def _lease_lost(self, execution: int, now: float) -> list[Outgoing]:
        """The task may run elsewhere now: end the agent's group as a cancel does, keep the
        events it printed (its stream is sealed as usual), and report nothing for it."""
        closing = self.closings.get(execution)
        if closing is not None:  # its agent ended: its result is not reported
            closing.fenced = True
            if closing.sealed:
                self._drop(closing)
            return []
        if self.execution is None or self.execution.assign.execution != execution:
            return []
        logger.warning("execution {}: its lease was lost; ending its agent", execution)
        self.fenced = True
        if self.phase in (Phase.PREPARING, Phase.RUNNING):
            self._end("cancelled", now)
        return []

    def _report(self, closing: Closing, now: float) -> list[Outgoing]:
        """Sealed (or given up on): the result goes to the broker, unless the lease was lost."""
        finished = closing.report(now)
        if closing.fenced:
            self._drop(closing)  # the queue would refuse it: nothing to report
            return []
        # While the worker runs its next attempt, the result may wait a moment to go with what
        # that attempt sends next (its WorkerFree, for a short task); while it waits for that
        # attempt's Assign, as long as an Assign takes to come.
        if not closing.released or self.stopping:
            return [ToBroker(finished)]
        if self.execution is not None:
            # Read late (the loop did not wake for the seal), it still goes by when it would
            # have gone had it been read on arrival, which cannot precede the agent's end.
            return [ToBroker(finished, wait=True, not_after=closing.ended_at + HOLD_SECONDS)]
        # As long as an Assign takes to come after the WorkerFree (sent at the agent's end).
        hold = max(0.0, closing.ended_at + NEXT_ASSIGN_SECONDS - now)
        return [ToBroker(finished, wait=True, hold=hold)]

    def _drop(self, closing: Closing) -> None:
        self.closings.pop(closing.id, None)
        closing.done()
