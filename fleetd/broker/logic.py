"""The broker's logic, socket-free: the queue's requests and `now` in, outgoing messages out.

It owns the queue (through `QueueStore`, the only writer of `queue.db`), hands tasks to idle
workers, renews and expires their leases, and answers the supervisor's queries. Its process
module (`fleetd.broker.process`) owns the ROUTER socket and feeds it.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable

import apsw
from loguru import logger

from fleetd.broker import steering
from fleetd.broker.budgets import Schedule
from fleetd.broker.dependencies import UnknownDependency
from fleetd.broker.reach import DatabaseWatch, Reach
from fleetd.broker.rows import Claim, Closed
from fleetd.broker.schedule_requests import no_such_task
from fleetd.broker.store import KeyConflict
from fleetd.broker.tally import RunTally
from fleetd.broker.worker_reports import Claims, WorkerReports
from fleetd.runtime.routing import ToPeer
from fleetd.stores.errors import StoreUnavailable
from fleetd.stores.nodes import other_workers
from fleetd.stores.protocol import QueueStoreAPI
from shared import messages as m
from shared.config import FleetConfig
from shared.models import TaskSpec, WorkerView, spec_problem

LEASE_CHECK_INTERVAL_US = 1_000_000
# What workers send that is resent or repeated: answered nothing while the database is away.
WORKER_REPORTS = (m.Ready, m.Heartbeat, m.AgentStarted, m.Finished)
DISK_FULL_RETRY_US = 1_000_000


class Broker(WorkerReports):
    """The broker's logic, socket-free: `handle` one request, `step` the timers."""

    def __init__(self, store: QueueStoreAPI, config: FleetConfig) -> None:
        self.store = store
        self.config = config
        self.lease_us = int(config.queue.lease_seconds * 1_000_000)
        self.heartbeat_us = int(config.worker.heartbeat_seconds * 1_000_000)
        self.dispatching = True
        self.waiting: OrderedDict[str, None] = OrderedDict()
        # Workers free (WorkerFree) whose next claim waits for that result: see _on_worker_free.
        self.awaiting_result: dict[str, int] = {}
        self.workers: dict[str, WorkerView] = {}
        self.claims = Claims.TRY
        self.wake_at = float("inf")  # when claims are tried again by themselves
        self.next_lease_check = 0
        self.tally = RunTally()  # /metrics' counters
        self.schedule = Schedule(config.limits, config.budget)
        self.counted_unstored: OrderedDict[int, None] = OrderedDict()  # see _gate_after
        self.node = config.node.name
        self.reach = DatabaseWatch(self.lease_us)

    def recover(self, reason: str, now: int) -> None:
        """At start after a crash: every execution still running belonged to the old fleetd."""
        self._log_closed(self.store.lose_all_running(reason, now))

    # --- timers --------------------------------------------------------------------------

    def step(self, now: int) -> list[ToPeer]:
        """Expire leases when due, then hand out what can be handed out."""
        try:
            return self._step(now)
        except StoreUnavailable as exc:
            return self._unreachable(now, exc)

    def _step(self, now: int) -> list[ToPeer]:
        if now >= self.next_lease_check:
            self.next_lease_check = now + LEASE_CHECK_INTERVAL_US
            try:
                self._log_closed(self.store.lose_expired(now))
                self.store.beat_node(self._worker_list(), now)
                self.reach.reached(now)
            except apsw.FullError:
                self._disk_full(now)  # tried again at the next lease check
            self._news()  # also wakes tasks whose not_before has passed
        if self.reach.phase is not Reach.REACHABLE:
            return []  # no claim until the lease check reaches the database again
        if now >= self.wake_at:
            self._news()
        return self.dispatch(now)

    def dispatch(self, now: int) -> list[ToPeer]:
        out: list[ToPeer] = []
        while self.dispatching and self.waiting and self._may_claim(now):
            worker = next(iter(self.waiting))
            try:
                claim = self.store.claim(worker, now, self.lease_us, self._gate(now))
            except apsw.FullError:
                self._disk_full(now)
                break
            if self.claims is Claims.DISK_FULL:
                logger.info("the disk has room again: handing out tasks")
                self.claims, self.wake_at = Claims.TRY, float("inf")
            if claim is None:
                self._nothing_claimable(now)
                break
            del self.waiting[worker]
            out.append(self._assign(worker, claim, now))
        return out

    def _may_claim(self, now: int) -> bool:
        if self.claims is Claims.DISK_FULL:
            return now >= self.wake_at
        return self.claims is Claims.TRY

    def wake(self) -> None:
        """Another broker sharing the queue may have made a task claimable."""
        self._news()

    def _news(self) -> None:
        """Something may have become claimable (a task queued or requeued, a backoff over).

        A full disk stays full until a claim succeeds: it is retried on its own timer.
        """
        if self.claims is Claims.NONE_DUE:
            self.claims, self.wake_at = Claims.TRY, float("inf")

    def _assign(
        self, worker: str, claim: Claim, now: int, acknowledges: int | None = None
    ) -> ToPeer:
        self.workers[worker] = WorkerView(
            id=worker,
            pid=self.workers[worker].pid if worker in self.workers else None,
            state="busy",
            task=claim.task,
            execution=claim.execution,
            since=now,
            node=self.node,
        )
        message = m.Assign(
            task=claim.task,
            execution=claim.execution,
            attempt=claim.attempt,
            spec=claim.spec,
            lease_expires_at=claim.lease_expires_at,
            resume=claim.resume,
            acknowledges=acknowledges,
            lease=claim.lease or None,
        )
        return ToPeer(worker.encode(), b"", message)

    def _disk_full(self, now: int) -> None:
        """The queue cannot take a write: claim nothing for a while rather than crash.

        A crashing broker would be restarted into the same full disk until the crash-loop
        limit stopped the whole fleet; waiting keeps it serving reads and running tasks.
        """
        if self.claims is not Claims.DISK_FULL:
            logger.error(
                "the disk under the queue is full: no task starts until there is room "
                "(retrying every {:g} s)",
                DISK_FULL_RETRY_US / 1_000_000,
            )
        self.claims = Claims.DISK_FULL
        self.wake_at = now + DISK_FULL_RETRY_US

    def _nothing_claimable(self, now: int) -> None:
        """No task can be claimed now: sleep until the earliest retry or hold is due, if any
        (a task held by a full limit waits for news: a running task ending)."""
        self.claims = Claims.NONE_DUE
        due = [t for t in (self.store.next_claimable_at(now), self.schedule.next_change(now)) if t]
        self.wake_at = min(due) if due else float("inf")

    def undeliverable(self, outgoing: ToPeer, now: int) -> None:
        """An Assign could not reach its worker: the task goes back without spending an attempt."""
        if isinstance(outgoing.message, m.Assign):
            execution = outgoing.message.execution
            # Without the database its lease expires instead, and the task goes back then.
            with contextlib.suppress(StoreUnavailable):
                self.store.finish(
                    execution, "interrupted", m.ExecutionResult(error="worker unreachable"), now
                )
            self.workers.pop(outgoing.peer.decode(), None)
            self._news()

    def _unreachable(self, now: int, exc: StoreUnavailable) -> list[ToPeer]:
        """The database did not answer: past a lease, this node's agents stop (once)."""
        if not self.reach.failed(now, str(exc)):
            return []
        busy = [w for w in self.workers.values() if w.state == "busy" and w.execution]
        return [ToPeer(w.id.encode(), b"", m.LeaseLost(execution=w.execution)) for w in busy]

    def _set_idle(self, worker: str, pid: int | None, now: int) -> None:
        self.workers[worker] = WorkerView(
            id=worker, pid=pid, state="idle", since=now, node=self.node
        )
        self.waiting[worker] = None

    def _log_closed(self, closed: list[Closed]) -> None:
        for item in closed:
            logger.warning(
                "execution {} of task {} lost (worker {}); task is now {}",
                item.execution,
                item.task,
                item.worker,
                item.task_state,
            )
        if closed:
            self._news()

    # --- requests --------------------------------------------------------------------------

    def handle(self, peer: bytes, ref: bytes, request: m.Message, now: int) -> list[ToPeer]:
        """Serve one request; returns replies and any messages it causes to other peers."""
        handler = self._handlers().get(type(request))
        if handler is None:
            reply: m.Message = m.ErrorReply(
                code="bad_request", message=f"the broker does not serve {type(request).__name__}"
            )
            return [ToPeer(peer, ref, reply)]
        if self.reach.phase is not Reach.REACHABLE and isinstance(request, WORKER_REPORTS):
            # Each would wait on the database in turn while the loop holds the LeaseLost it
            # owes the workers: the lease check alone probes the database until it answers.
            return []
        try:
            return handler(peer, ref, request, now)
        except StoreUnavailable as exc:
            out = self._unreachable(now, exc)
            if isinstance(request, WORKER_REPORTS):
                return out  # each is resent or repeated: the lease decides meanwhile
            unavailable = m.ErrorReply(code="unavailable", message=str(exc))
            return [ToPeer(peer, ref, unavailable), *out]

    def _handlers(self) -> dict[type, Callable[..., list[ToPeer]]]:
        return {
            m.Ready: self._on_ready,
            m.Heartbeat: self._on_heartbeat,
            m.AgentStarted: self._on_agent_started,
            m.Finished: self._on_finished,
            m.WorkerFree: self._on_worker_free,
            m.Enqueue: self._on_enqueue,
            m.ListTasks: self._on_list,
            m.ShowTask: self._on_show,
            m.CancelTask: self._on_cancel,
            m.RetryTask: self._on_retry,
            m.ListWorkers: self._on_workers,
            m.WorkerGone: self._on_worker_gone,
            m.SetDispatch: self._on_set_dispatch,
            m.GetCounts: self._on_counts,
            m.GetRunTotals: self._on_run_totals,
            m.SayToTask: self._on_to_agent,
            m.InterruptTask: self._on_to_agent,
            m.SetPriority: self._on_set_priority,
            m.GetUsage: self._on_usage,
            m.SetSchedule: self._on_set_schedule,
            m.FindTasks: self._on_find,
        }

    def _on_enqueue(self, peer: bytes, ref: bytes, msg: m.Enqueue, now: int) -> list[ToPeer]:
        for index, spec in enumerate(msg.tasks):
            problem = spec_problem(spec)
            if problem is not None:
                where = f"task {index + 1}: " if len(msg.tasks) > 1 else ""
                reply = m.ErrorReply(code="bad_request", message=where + problem)
                return [ToPeer(peer, ref, reply)]
        # A worker waiting: its claim is made in the enqueue's transaction (one commit on the
        # way from an enqueue to an idle worker's agent, not two).
        first = next(iter(self.waiting), None) if self._may_claim_with_news(now) else None
        try:
            if first is None:
                created, claim = self.store.enqueue(msg.tasks, now), None
            else:
                created, claim = self._enqueue_and_claim(msg.tasks, now, first)
        except KeyConflict as exc:
            return [ToPeer(peer, ref, m.ErrorReply(code="conflict", message=str(exc)))]
        except UnknownDependency as exc:
            return [ToPeer(peer, ref, m.ErrorReply(code="bad_request", message=str(exc)))]
        self._news()
        reply = m.Enqueued(ids=[i for i, _ in created], created=[c for _, c in created])
        out = [ToPeer(peer, ref, reply)]
        if first is not None and claim is None and self.claims is not Claims.DISK_FULL:
            self._nothing_claimable(now)  # nor for any other waiting worker, through that gate
        if first is not None and claim is not None:
            del self.waiting[first]
            out.append(self._assign(first, claim, now))
        return out + self.dispatch(now)

    def _enqueue_and_claim(
        self, tasks: list[TaskSpec], now: int, worker: str
    ) -> tuple[list[tuple[int, bool]], Claim | None]:
        try:
            return self.store.enqueue_and_claim(tasks, now, worker, self.lease_us, self._gate(now))
        except apsw.FullError:
            # No room for both: claims wait for room (their own timer); the tasks may fit alone.
            self._disk_full(now)
            return self.store.enqueue(tasks, now), None

    def _may_claim_with_news(self, now: int) -> bool:
        """Whether an enqueue (news: something may be claimable) may claim for a waiting worker."""
        return (
            self.dispatching
            and bool(self.waiting)
            and self.reach.phase is Reach.REACHABLE
            and self.claims is not Claims.DISK_FULL  # dispatch tries that again on its timer
        )

    def _on_list(self, peer: bytes, ref: bytes, msg: m.ListTasks, now: int) -> list[ToPeer]:
        tasks, next_before = self.store.list_page(
            msg.state,
            msg.limit,
            msg.before,
            agent=msg.agent,
            repo=msg.repo,
            label=msg.label,
            search=msg.search,
        )
        return [ToPeer(peer, ref, m.TaskList(tasks=tasks, next_before=next_before))]

    def _on_find(self, peer: bytes, ref: bytes, msg: m.FindTasks, now: int) -> list[ToPeer]:
        return [ToPeer(peer, ref, m.TaskList(tasks=self.store.tasks_by_key(msg.keys)))]

    def _on_show(self, peer: bytes, ref: bytes, msg: m.ShowTask, now: int) -> list[ToPeer]:
        task = self.store.get_task(msg.task)
        if task is None:
            return [ToPeer(peer, ref, no_such_task(msg.task))]
        return [ToPeer(peer, ref, m.TaskDetail(task=task))]

    def _on_cancel(self, peer: bytes, ref: bytes, msg: m.CancelTask, now: int) -> list[ToPeer]:
        outcome = self.store.cancel(msg.task, now)
        if outcome is None:
            return [ToPeer(peer, ref, no_such_task(msg.task))]
        state, execution, worker = outcome
        reply = m.Cancelled(task=msg.task, state=state, pending=execution is not None)
        out = [ToPeer(peer, ref, reply)]
        if execution is not None and worker is not None:
            out.append(ToPeer(worker.encode(), b"", m.CancelExecution(execution=execution)))
        return out

    def _on_to_agent(
        self, peer: bytes, ref: bytes, msg: m.SayToTask | m.InterruptTask, now: int
    ) -> list[ToPeer]:
        reply, order = steering.route(self.store.get_task(msg.task), msg, self.config)
        out = [ToPeer(peer, ref, reply)]
        if order is not None:
            out.append(ToPeer(order[0].encode(), b"", order[1]))
        return out

    def _on_retry(self, peer: bytes, ref: bytes, msg: m.RetryTask, now: int) -> list[ToPeer]:
        retried = self.store.retry(msg.task, msg.resume, now)
        if retried is None:
            return [ToPeer(peer, ref, no_such_task(msg.task))]
        if retried.refused is not None:
            return [ToPeer(peer, ref, m.ErrorReply(code="conflict", message=retried.refused))]
        self._news()
        reply = m.Retried(task=msg.task, state="queued", resume=retried.resume is not None)
        return [ToPeer(peer, ref, reply), *self.dispatch(now)]

    def _on_workers(self, peer: bytes, ref: bytes, msg: m.ListWorkers, now: int) -> list[ToPeer]:
        workers = self._worker_list() + self._other_workers(now)
        return [ToPeer(peer, ref, m.WorkerList(workers=workers))]

    def _other_workers(self, now: int) -> list[WorkerView]:
        """The other nodes' workers, from their heartbeats (none on SQLite: one node)."""
        return other_workers(self.store.other_nodes(now), now, self.lease_us)

    def _worker_list(self) -> list[WorkerView]:
        return sorted(self.workers.values(), key=lambda w: (len(w.id), w.id))

    def _on_worker_gone(self, peer: bytes, ref: bytes, msg: m.WorkerGone, now: int) -> list[ToPeer]:
        self._log_closed(self.store.lose_worker(msg.worker, msg.reason, now))
        self.waiting.pop(msg.worker, None)
        self.awaiting_result.pop(msg.worker, None)
        self.workers.pop(msg.worker, None)
        return [ToPeer(peer, ref, m.Accepted()), *self.dispatch(now)]

    def _on_set_dispatch(
        self, peer: bytes, ref: bytes, msg: m.SetDispatch, now: int
    ) -> list[ToPeer]:
        self.dispatching = msg.dispatching
        out = [ToPeer(peer, ref, m.Accepted())]
        return out + self.dispatch(now) if msg.dispatching else out

    def _on_counts(self, peer: bytes, ref: bytes, msg: m.GetCounts, now: int) -> list[ToPeer]:
        reply = m.QueueCounts(
            counts=self.store.counts(),
            workers=self._worker_list(),
            dispatching=self.dispatching,
            schedule=self._schedule_view(now),
            other_workers=self._other_workers(now),
        )
        return [ToPeer(peer, ref, reply)]

    def _on_run_totals(
        self, peer: bytes, ref: bytes, msg: m.GetRunTotals, now: int
    ) -> list[ToPeer]:
        self.store.store_started()  # the start times kept for the next write count too
        return [ToPeer(peer, ref, self.tally.totals(self.store))]
