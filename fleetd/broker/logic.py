"""The broker process: owns the queue, hands tasks to idle workers, tracks their leases."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import apsw
import zmq
from loguru import logger

from fleetd.broker.policy import Backoff
from fleetd.broker.store import Claim, Closed, QueueStore
from fleetd.runtime.lifecycle import child_start
from shared import messages as m
from shared.config import FleetConfig
from shared.models import WorkerView, now_us, spec_problem

LEASE_CHECK_INTERVAL_US = 1_000_000
DISK_FULL_RETRY_US = 1_000_000
RECV_BATCH = 256
SUPERVISOR_ID = b"supervisor"


@dataclass(frozen=True)
class Outgoing:
    """A message to send: to which peer, echoing which request reference."""

    peer: bytes
    ref: bytes
    message: m.Message


class Broker:
    """The broker's logic, socket-free: `handle` one request, `step` the timers."""

    def __init__(self, store: QueueStore, config: FleetConfig) -> None:
        self.store = store
        self.lease_us = int(config.queue.lease_seconds * 1_000_000)
        self.heartbeat_us = int(config.worker.heartbeat_seconds * 1_000_000)
        self.dispatching = True
        self.waiting: OrderedDict[str, None] = OrderedDict()
        self.workers: dict[str, WorkerView] = {}
        self.maybe_claimable = True
        self.next_lease_check = 0
        self.wake_at = float("inf")  # when a task waiting out a retry backoff becomes claimable
        self.disk_full = False

    # --- timers --------------------------------------------------------------------------

    def step(self, now: int) -> list[Outgoing]:
        """Expire leases when due, then hand out what can be handed out."""
        if now >= self.next_lease_check:
            self.next_lease_check = now + LEASE_CHECK_INTERVAL_US
            try:
                self._log_closed(self.store.lose_expired(now))
            except apsw.FullError:
                self._disk_full(now)  # tried again at the next lease check
            self.maybe_claimable = True  # also wakes tasks whose not_before has passed
        if now >= self.wake_at:
            self.maybe_claimable = True
            self.wake_at = float("inf")
        return self.dispatch(now)

    def dispatch(self, now: int) -> list[Outgoing]:
        out: list[Outgoing] = []
        while self.dispatching and self.waiting and self.maybe_claimable:
            worker = next(iter(self.waiting))
            try:
                claim = self.store.claim(worker, now, self.lease_us)
            except apsw.FullError:
                self._disk_full(now)
                break
            if self.disk_full:
                self.disk_full = False
                logger.info("the disk has room again: handing out tasks")
            if claim is None:
                self._nothing_claimable()
                break
            del self.waiting[worker]
            out.append(self._assign(worker, claim, now))
        return out

    def _assign(self, worker: str, claim: Claim, now: int) -> Outgoing:
        self.workers[worker] = WorkerView(
            id=worker,
            pid=self.workers[worker].pid if worker in self.workers else None,
            state="busy",
            task=claim.task,
            execution=claim.execution,
            since=now,
        )
        message = m.Assign(
            task=claim.task,
            execution=claim.execution,
            attempt=claim.attempt,
            spec=claim.spec,
            lease_expires_at=claim.lease_expires_at,
            resume=claim.resume,
        )
        return Outgoing(worker.encode(), b"", message)

    def _disk_full(self, now: int) -> None:
        """The queue cannot take a write: claim nothing for a while rather than crash.

        A crashing broker would be restarted into the same full disk until the crash-loop
        limit stopped the whole fleet; waiting keeps it serving reads and running tasks.
        """
        if not self.disk_full:
            logger.error(
                "the disk under the queue is full: no task starts until there is room "
                "(retrying every {:g} s)",
                DISK_FULL_RETRY_US / 1_000_000,
            )
        self.disk_full = True
        self.maybe_claimable = False
        self.wake_at = min(self.wake_at, now + DISK_FULL_RETRY_US)

    def _nothing_claimable(self) -> None:
        """No task can be claimed now: sleep until the earliest retry is due, if any."""
        self.maybe_claimable = False
        due = self.store.next_claimable_at()
        self.wake_at = float("inf") if due is None else due

    def undeliverable(self, outgoing: Outgoing, now: int) -> None:
        """An Assign could not reach its worker: the task goes back without spending an attempt."""
        if isinstance(outgoing.message, m.Assign):
            execution = outgoing.message.execution
            self.store.finish(
                execution, "interrupted", m.RunResult(error="worker unreachable"), now
            )
            self.workers.pop(outgoing.peer.decode(), None)
            self.maybe_claimable = True

    def _set_idle(self, worker: str, pid: int | None, now: int) -> None:
        self.workers[worker] = WorkerView(id=worker, pid=pid, state="idle", since=now)
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
            self.maybe_claimable = True

    # --- requests --------------------------------------------------------------------------

    def handle(self, peer: bytes, ref: bytes, request: m.Message, now: int) -> list[Outgoing]:
        """Serve one request; returns replies and any messages it causes to other peers."""
        handler = self._handlers().get(type(request))
        if handler is None:
            reply: m.Message = m.ErrorReply(
                code="bad_request", message=f"the broker does not serve {type(request).__name__}"
            )
            return [Outgoing(peer, ref, reply)]
        return handler(peer, ref, request, now)

    def _handlers(self) -> dict[type, Callable[..., list[Outgoing]]]:
        return {
            m.Ready: self._on_ready,
            m.Heartbeat: self._on_heartbeat,
            m.AgentStarted: self._on_agent_started,
            m.Finished: self._on_finished,
            m.Enqueue: self._on_enqueue,
            m.ListTasks: self._on_list,
            m.ShowTask: self._on_show,
            m.CancelTask: self._on_cancel,
            m.RetryTask: self._on_retry,
            m.ListWorkers: self._on_workers,
            m.WorkerGone: self._on_worker_gone,
            m.SetDispatch: self._on_set_dispatch,
            m.GetCounts: self._on_counts,
        }

    def _on_ready(self, peer: bytes, ref: bytes, msg: m.Ready, now: int) -> list[Outgoing]:
        # A worker announcing itself holds nothing: whatever we think it holds was lost.
        self._log_closed(self.store.lose_worker(msg.worker, "worker restarted", now))
        self._set_idle(msg.worker, msg.pid, now)
        return self.dispatch(now)

    def _on_heartbeat(self, peer: bytes, ref: bytes, msg: m.Heartbeat, now: int) -> list[Outgoing]:
        view = self.workers.get(msg.worker)
        if msg.execution is not None:
            if self.store.renew(msg.execution, msg.worker, now, self.lease_us):
                if view is not None and view.pid != msg.pid:
                    self.workers[msg.worker] = _with_pid(view, msg.pid)
                return []
            # The lease was lost (e.g. the broker was down too long): the task may run
            # elsewhere now, so this copy must stop.
            return [Outgoing(peer, b"", m.CancelExecution(execution=msg.execution))]
        stale = [
            execution
            for execution, _, claimed_at in self.store.running_of(msg.worker)
            if now - claimed_at > 2 * self.heartbeat_us
        ]
        for execution in stale:
            self._log_closed(
                self.store.lose_execution(execution, "assignment never reached the worker", now)
            )
        if msg.worker not in self.waiting and not self.store.running_of(msg.worker):
            # A broker restart forgets who was waiting; an idle heartbeat re-announces it.
            self._set_idle(msg.worker, msg.pid, now)
            return self.dispatch(now)
        return []

    def _on_agent_started(
        self, peer: bytes, ref: bytes, msg: m.AgentStarted, now: int
    ) -> list[Outgoing]:
        self.store.mark_started(msg.execution, msg.started_at, msg.pid)
        return []

    def _on_finished(self, peer: bytes, ref: bytes, msg: m.Finished, now: int) -> list[Outgoing]:
        worker = peer.decode()
        # A worker reporting `interrupted` is stopping (or refused a task while busy).
        wants_work = self.dispatching and self.maybe_claimable and msg.outcome != "interrupted"
        claim_for = worker if wants_work else None
        state, claim = self.store.finish(
            msg.execution, msg.outcome, msg.result, now, claim_for, self.lease_us
        )
        out = [Outgoing(peer, ref, m.FinishAck(execution=msg.execution))]
        if state is None:
            return out  # a resent result, already recorded
        if state == "queued":
            self.maybe_claimable = True
        pid = self.workers[worker].pid if worker in self.workers else None
        if claim is not None:
            out.append(self._assign(worker, claim, now))
        elif msg.outcome != "interrupted":
            if claim_for is not None:
                self._nothing_claimable()
            self._set_idle(worker, pid, now)
            out.extend(self.dispatch(now))
        return out

    def _on_enqueue(self, peer: bytes, ref: bytes, msg: m.Enqueue, now: int) -> list[Outgoing]:
        for index, spec in enumerate(msg.tasks):
            problem = spec_problem(spec)
            if problem is not None:
                where = f"task {index + 1}: " if len(msg.tasks) > 1 else ""
                reply = m.ErrorReply(code="bad_request", message=where + problem)
                return [Outgoing(peer, ref, reply)]
        created = self.store.enqueue(msg.tasks, now)
        self.maybe_claimable = True
        reply = m.Enqueued(ids=[i for i, _ in created], created=[c for _, c in created])
        return [Outgoing(peer, ref, reply), *self.dispatch(now)]

    def _on_list(self, peer: bytes, ref: bytes, msg: m.ListTasks, now: int) -> list[Outgoing]:
        tasks = self.store.list_tasks(msg.state, max(1, min(msg.limit, 10_000)))
        return [Outgoing(peer, ref, m.TaskList(tasks=tasks))]

    def _on_show(self, peer: bytes, ref: bytes, msg: m.ShowTask, now: int) -> list[Outgoing]:
        task = self.store.get_task(msg.task)
        if task is None:
            return [Outgoing(peer, ref, _no_such_task(msg.task))]
        return [Outgoing(peer, ref, m.TaskDetail(task=task))]

    def _on_cancel(self, peer: bytes, ref: bytes, msg: m.CancelTask, now: int) -> list[Outgoing]:
        outcome = self.store.cancel(msg.task, now)
        if outcome is None:
            return [Outgoing(peer, ref, _no_such_task(msg.task))]
        state, execution, worker = outcome
        reply = m.Cancelled(task=msg.task, state=state, pending=execution is not None)
        out = [Outgoing(peer, ref, reply)]
        if execution is not None and worker is not None:
            out.append(Outgoing(worker.encode(), b"", m.CancelExecution(execution=execution)))
        return out

    def _on_retry(self, peer: bytes, ref: bytes, msg: m.RetryTask, now: int) -> list[Outgoing]:
        retried = self.store.retry(msg.task, msg.resume, now)
        if retried is None:
            return [Outgoing(peer, ref, _no_such_task(msg.task))]
        if retried.refused is not None:
            return [Outgoing(peer, ref, m.ErrorReply(code="conflict", message=retried.refused))]
        self.maybe_claimable = True
        reply = m.Retried(task=msg.task, state="queued", resume=retried.resume is not None)
        return [Outgoing(peer, ref, reply), *self.dispatch(now)]

    def _on_workers(self, peer: bytes, ref: bytes, msg: m.ListWorkers, now: int) -> list[Outgoing]:
        return [Outgoing(peer, ref, m.WorkerList(workers=self._worker_list()))]

    def _worker_list(self) -> list[WorkerView]:
        return sorted(self.workers.values(), key=lambda w: (len(w.id), w.id))

    def _on_worker_gone(
        self, peer: bytes, ref: bytes, msg: m.WorkerGone, now: int
    ) -> list[Outgoing]:
        self._log_closed(self.store.lose_worker(msg.worker, msg.reason, now))
        self.waiting.pop(msg.worker, None)
        self.workers.pop(msg.worker, None)
        return [Outgoing(peer, ref, m.Accepted()), *self.dispatch(now)]

    def _on_set_dispatch(
        self, peer: bytes, ref: bytes, msg: m.SetDispatch, now: int
    ) -> list[Outgoing]:
        self.dispatching = msg.dispatching
        out = [Outgoing(peer, ref, m.Accepted())]
        return out + self.dispatch(now) if msg.dispatching else out

    def _on_counts(self, peer: bytes, ref: bytes, msg: m.GetCounts, now: int) -> list[Outgoing]:
        reply = m.QueueCounts(
            counts=self.store.counts(), workers=self._worker_list(), dispatching=self.dispatching
        )
        return [Outgoing(peer, ref, reply)]


def _with_pid(view: WorkerView, pid: int) -> WorkerView:
    return WorkerView(
        id=view.id,
        pid=pid,
        state=view.state,
        task=view.task,
        execution=view.execution,
        since=view.since,
    )


def _no_such_task(task: int) -> m.ErrorReply:
    return m.ErrorReply(
        code="not_found", message=f"no task {task}: `fleetctl list` shows the known tasks"
    )


def run(config: FleetConfig, recover: bool) -> None:
    """The broker process's entry point (started by the supervisor)."""
    shutdown = child_start("broker", "fleetd: broker", config.log_level, config.log_json)
    paths = config.paths()
    backoff = Backoff(config.queue.retry_backoff_seconds, config.queue.retry_backoff_max)
    store = QueueStore.open(paths.queue_db, config.queue.max_attempts, backoff)
    broker = Broker(store, config)
    if recover:
        closed = store.lose_all_running("fleetd stopped without ending this run", now_us())
        broker._log_closed(closed)
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.MAXMSGSIZE, 256 * 1024 * 1024)
    sock.bind(paths.broker_endpoint)
    logger.info("broker ready on {}", paths.broker_endpoint)
    try:
        _loop(broker, sock, shutdown)
    finally:
        sock.close()
        context.term()
        store.close()
    logger.info("broker stopped")


def _loop(broker: Broker, sock: zmq.Socket, shutdown) -> None:
    codec = m.broker_request_codec()
    replies = m.broker_reply_codec()
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(shutdown.fd, zmq.POLLIN)
    while shutdown.received is None:
        events = dict(poller.poll(200))
        if shutdown.fd in events:
            shutdown.drain()
        out: list[Outgoing] = []
        for _ in range(RECV_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            out.extend(_serve(broker, codec, frames))
        out.extend(broker.step(now_us()))
        for outgoing in out:
            _send(broker, sock, replies, outgoing)


def _serve(broker: Broker, codec: m.Codec, frames: list[bytes]) -> list[Outgoing]:
    if len(frames) != 3:
        logger.warning("dropping a malformed broker message ({} frames)", len(frames))
        return []
    peer, ref, payload = frames
    try:
        request = codec.decode(payload)
    except Exception as exc:  # a malformed message gets an error reply, never a crash
        return [Outgoing(peer, ref, m.ErrorReply(code="bad_request", message=str(exc)))]
    try:
        return broker.handle(peer, ref, request, now_us())
    except Exception:
        logger.exception("broker failed serving {}", type(request).__name__)
        reply = m.ErrorReply(code="internal", message="the broker failed; see the fleetd log")
        return [Outgoing(peer, ref, reply)]


def _send(broker: Broker, sock: zmq.Socket, codec: m.Codec, outgoing: Outgoing) -> None:
    try:
        sock.send_multipart([outgoing.peer, outgoing.ref, codec.encode(outgoing.message)])
    except zmq.ZMQError as exc:
        if exc.errno != zmq.EHOSTUNREACH:
            raise
        logger.warning("peer {} unreachable; {} not delivered", outgoing.peer, outgoing.message)
        broker.undeliverable(outgoing, now_us())
