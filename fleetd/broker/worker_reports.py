"""What workers tell the broker, beside its core (`fleetd.broker.logic`): Ready, Heartbeat,
AgentStarted, WorkerFree and Finished, one at a time or, for a short task's end, a result and
the worker's WorkerFree together (`handle_all`): the result stored and the worker's next task
claimed in one transaction."""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import apsw
from loguru import logger

from fleetd.broker.reach import DatabaseWatch, Reach
from fleetd.broker.rows import Claim, Closed
from fleetd.broker.schedule_requests import SchedulingRequests
from fleetd.runtime.routing import ToPeer
from fleetd.stores.errors import StoreUnavailable
from shared import messages as m
from shared.models import WorkerView


class Claims(enum.Enum):
    """Whether the broker tries to claim tasks for waiting workers now, and why not."""

    TRY = "try"  # something may be claimable: try at the next chance
    NONE_DUE = "none due"  # nothing claimable until `wake_at` (a retry's backoff) or news
    DISK_FULL = "disk full"  # the queue cannot take a write: try again at `wake_at`


class WorkerReports(SchedulingRequests):
    """A part of `Broker`: its workers' reports (the state and helpers used are the Broker's)."""

    lease_us: int
    heartbeat_us: int
    dispatching: bool
    waiting: OrderedDict[str, None]
    awaiting_result: dict[str, int]
    workers: dict[str, WorkerView]
    claims: Claims
    reach: DatabaseWatch

    def handle(self, peer: bytes, ref: bytes, request: m.Message, now: int) -> list[ToPeer]:
        raise NotImplementedError  # the Broker's

    def _assign(
        self, worker: str, claim: Claim, now: int, acknowledges: int | None = None
    ) -> ToPeer:
        raise NotImplementedError  # the Broker's

    def _set_idle(self, worker: str, pid: int | None, now: int) -> None:
        raise NotImplementedError  # the Broker's

    def _nothing_claimable(self, now: int) -> None:
        raise NotImplementedError  # the Broker's

    def _disk_full(self, now: int) -> None:
        raise NotImplementedError  # the Broker's

    def _unreachable(self, now: int, exc: StoreUnavailable) -> list[ToPeer]:
        raise NotImplementedError  # the Broker's

    def _log_closed(self, closed: list[Closed]) -> None:
        raise NotImplementedError  # the Broker's

    def handle_all(
        self, peer: bytes, ref: bytes, requests: list[m.Message], now: int
    ) -> list[ToPeer]:
        """The requests of one ZeroMQ message, in order. A worker's released result followed by
        its WorkerFree (what a short task's end sends) is one write: the result and the
        worker's next claim in one transaction, as a result without the overlap is."""
        out: list[ToPeer] = []
        index = 0
        while index < len(requests):
            request = requests[index]
            free_at = self._free_after(peer, requests, index)
            if free_at is not None:
                following = requests[free_at]
                assert isinstance(request, m.Finished) and isinstance(following, m.WorkerFree)
                # The starts between them (the next run's AgentStarted) are served first: they
                # are other executions', so the order does not matter to either.
                for started in requests[index + 1 : free_at]:
                    serve_start = partial(self.handle, peer, ref, started, now)
                    out += _guarded(peer, ref, started, serve_start)
                serve = partial(self._on_result_and_free, peer, ref, request, following, now)
                out += _guarded(peer, ref, request, serve)
                index = free_at + 1
                continue
            out += _guarded(peer, ref, request, partial(self.handle, peer, ref, request, now))
            index += 1
        return out

    def _free_after(self, peer: bytes, requests: list[m.Message], index: int) -> int | None:
        """Where the WorkerFree is that the released result at `index` is stored with, if any:
        the next request but AgentStarted of other executions. The worker's outbox sends a
        result waiting for the next Assign before that run's AgentStarted: in the throughput
        benchmark 60% of short tasks' ends came so, and each cost two commits, not one."""
        request = requests[index]
        if not isinstance(request, m.Finished):
            return None
        after = index + 1
        while after < len(requests) and _another_start(requests[after], request.execution):
            after += 1
        following = requests[after] if after < len(requests) else None
        return after if self._result_then_free(peer, request, following) else None

    def _result_then_free(
        self, peer: bytes, request: m.Message, following: m.Message | None
    ) -> bool:
        if not (isinstance(request, m.Finished) and isinstance(following, m.WorkerFree)):
            return False
        worker = peer.decode()
        return (
            request.released
            and following.worker == worker
            and self.reach.phase is Reach.REACHABLE
            # Another worker waiting gets the next claim first; a result someone waits for
            # (its dependents) is not this one; each of those goes its own way.
            and not self.waiting
            and worker not in self.awaiting_result
        )

    def _on_result_and_free(
        self, peer: bytes, ref: bytes, msg: m.Finished, free: m.WorkerFree, now: int
    ) -> list[ToPeer]:
        """`msg` (released) and `free` from the same worker: the result stored and the worker's
        next task claimed in one transaction; the Assign acknowledges the result."""
        try:
            if self.store.has_dependents(free.execution):
                return self._on_released_result(peer, ref, msg, now) + self._on_worker_free(
                    peer, ref, free, now
                )
            worker = peer.decode()
            wants_work = self.dispatching and self.claims is Claims.TRY
            gate = self._gate_after(msg, now)
            state, claim = self.store.finish(
                msg.execution,
                msg.outcome,
                msg.result,
                now,
                worker if wants_work else None,
                self.lease_us,
                gate,
                msg.lease,
            )
        except StoreUnavailable as exc:
            return self._unreachable(now, exc)  # both are resent or repeated
        except apsw.FullError:
            self._disk_full(now)  # the result is resent; the worker waits for room meanwhile
            return self._on_worker_free(peer, ref, free, now)
        self._result_stored(msg.execution)
        if state is None:  # a resent result, already recorded: the worker is free all the same
            ack = ToPeer(peer, ref, m.FinishAck(execution=msg.execution))
            return [ack, *self._on_worker_free(peer, ref, free, now)]
        self._news()  # whatever the result released may go to another waiting worker too
        if claim is not None:
            return [
                self._assign(worker, claim, now, acknowledges=msg.execution),
                *self.dispatch(now),
            ]
        if wants_work:
            self._nothing_claimable(now)
        self._set_idle(worker, free.pid, now)
        return [ToPeer(peer, ref, m.FinishAck(execution=msg.execution)), *self.dispatch(now)]

    def _on_ready(self, peer: bytes, ref: bytes, msg: m.Ready, now: int) -> list[ToPeer]:
        # A worker announcing itself holds nothing: whatever we think it holds was lost.
        self._log_closed(self.store.lose_worker(msg.worker, "worker restarted", now))
        self.awaiting_result.pop(msg.worker, None)
        self._set_idle(msg.worker, msg.pid, now)
        return self.dispatch(now)

    def _on_heartbeat(self, peer: bytes, ref: bytes, msg: m.Heartbeat, now: int) -> list[ToPeer]:
        view = self.workers.get(msg.worker)
        # Results being sealed keep their leases; their agents ended, so nothing to cancel.
        for execution in msg.sealing:
            self.store.renew(execution, msg.worker, now, self.lease_us)
        if msg.execution is not None:
            if self.store.renew(msg.execution, msg.worker, now, self.lease_us, msg.lease):
                if view is not None and view.pid != msg.pid:
                    self.workers[msg.worker] = _with_pid(view, msg.pid)
                return []
            # The lease was lost (taken over, the task cancelled, or the broker down too
            # long): the task may run elsewhere now, so this copy stops and reports nothing.
            return [ToPeer(peer, b"", m.LeaseLost(execution=msg.execution))]
        held = [row for row in self.store.running_of(msg.worker) if row[0] not in msg.sealing]
        stale = [
            execution
            for execution, _, claimed_at in held
            if now - claimed_at > 2 * self.heartbeat_us
        ]
        for execution in stale:
            self._log_closed(
                self.store.lose_execution(execution, "assignment never reached the worker", now)
            )
        idle = msg.worker not in self.waiting and msg.worker not in self.awaiting_result
        if idle and len(held) == len(stale):
            # A broker restart forgets who was waiting; an idle heartbeat re-announces it.
            self._set_idle(msg.worker, msg.pid, now)
            return self.dispatch(now)
        return []

    def _on_agent_started(
        self, peer: bytes, ref: bytes, msg: m.AgentStarted, now: int
    ) -> list[ToPeer]:
        self.store.mark_started(msg.execution, msg.started_at, msg.pid, msg.lease)
        return []

    def _on_worker_free(self, peer: bytes, ref: bytes, msg: m.WorkerFree, now: int) -> list[ToPeer]:
        """A worker's agent ended and its result follows after the seal: its next task now.
        The execution stays running (its limits and lease held) until that result."""
        if self.store.has_dependents(msg.execution):
            # Its result may release tasks that outrank what is queued now (a dependent's
            # priority): this worker's next claim is made with the result, as without the
            # overlap, so that they are not passed over.
            self.awaiting_result[msg.worker] = msg.execution
            return []
        self._set_idle(msg.worker, msg.pid, now)
        return self.dispatch(now)

    def _on_finished(self, peer: bytes, ref: bytes, msg: m.Finished, now: int) -> list[ToPeer]:
        worker = peer.decode()
        if msg.released and self.awaiting_result.get(worker) != msg.execution:
            return self._on_released_result(peer, ref, msg, now)
        self.awaiting_result.pop(worker, None)
        # A worker reporting `interrupted` is stopping (or refused a task while busy).
        wants_work = self.dispatching and self.claims is Claims.TRY and msg.outcome != "interrupted"
        claim_for = worker if wants_work else None
        gate = self._gate_after(msg, now)
        state, claim = self.store.finish(
            msg.execution, msg.outcome, msg.result, now, claim_for, self.lease_us, gate, msg.lease
        )
        self._result_stored(msg.execution)
        ack = ToPeer(peer, ref, m.FinishAck(execution=msg.execution))
        if state is None:
            return [ack]  # a resent result, already recorded
        if not gate.open or self.schedule.has_budgets:
            self._news()  # a limit has room again, a budget was spent or a hold began
        if state == "queued":
            self._news()
        pid = self.workers[worker].pid if worker in self.workers else None
        if claim is not None:
            # One message, not two: the next Assign carries the acknowledgement. A worker that
            # waited may claim what the result released (a dependent, a limit's slot).
            self._news()
            return [
                self._assign(worker, claim, now, acknowledges=msg.execution),
                *self.dispatch(now),
            ]
        out = [ack]
        if msg.outcome != "interrupted":
            if claim_for is not None:
                self._nothing_claimable(now)
            self._set_idle(worker, pid, now)
            out.extend(self.dispatch(now))
        return out

    def _on_released_result(
        self, peer: bytes, ref: bytes, msg: m.Finished, now: int
    ) -> list[ToPeer]:
        """The result of a worker that said it was free (WorkerFree) when its agent ended: it
        is waiting or runs its next task, so nothing is claimed for it here."""
        self._gate_after(msg, now)  # counts the result's spend and rate limit
        state, _ = self.store.finish(msg.execution, msg.outcome, msg.result, now, lease=msg.lease)
        self._result_stored(msg.execution)
        ack = ToPeer(peer, ref, m.FinishAck(execution=msg.execution))
        if state is None:
            return [ack]  # a resent result, already recorded
        # The run no longer holds a limit's slot; the task may be queued again, or a task that
        # waited on it (`after`) may start: a waiting worker tries to claim.
        self._news()
        return [ack, *self.dispatch(now)]


def _with_pid(view: WorkerView, pid: int) -> WorkerView:
    return WorkerView(
        id=view.id,
        pid=pid,
        state=view.state,
        task=view.task,
        execution=view.execution,
        since=view.since,
        node=view.node,
    )


def _guarded(
    peer: bytes, ref: bytes, request: m.Message, serve: Callable[[], list[ToPeer]]
) -> list[ToPeer]:
    """`serve` one request; a bug in serving it is logged and its sender told, and the broker
    goes on with the next."""
    try:
        return serve()
    except Exception:
        logger.exception("broker failed serving {}", type(request).__name__)
        reply = m.ErrorReply(code="internal", message="the broker failed; see the fleetd log")
        return [ToPeer(peer, ref, reply)]


def _another_start(message: m.Message, execution: int) -> bool:
    return isinstance(message, m.AgentStarted) and message.execution != execution
