"""The task queue in PostgreSQL, shared by the fleetd of several hosts: the SQLite store's
semantics (fleetd/broker/store.py), with what several writers need.

- Claims lock their task with `FOR UPDATE SKIP LOCKED` in the same priority-then-FIFO order,
  so brokers on several nodes never take one task twice and never wait for one another.
- Each claim's execution carries its node and a lease token from a sequence (the fence: a
  renew, start or finish with another token changes nothing).
- A starting broker recovers only its own node's executions; a dead worker is looked up by
  (node, worker); expired leases of any node are requeued by whichever broker sees them.
- Whatever may make a task claimable NOTIFYs (payload: the node), so idle brokers elsewhere
  claim at once instead of at their next poll.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

import msgspec

from fleetd.broker.dependencies import link, settle
from fleetd.broker.policy import Backoff, retry_refusal, task_state_after
from fleetd.broker.reads import same_task
from fleetd.broker.rows import (
    INSERT_TASK,
    Claim,
    Closed,
    Retried,
    continue_thread,
    decode_spec,
    resume_of,
    resume_source,
    task_values,
)
from fleetd.broker.scheduling import Gate
from fleetd.broker.store import SCAN_WINDOW, KeyConflict
from fleetd.stores import nodes
from fleetd.stores.postgres import schema
from fleetd.stores.postgres.database import CHANNEL, Database, Listener, Tx, connect
from fleetd.stores.postgres.reads import PgReads, first_fit
from shared.models import (
    TERMINAL_STATES,
    ExecutionOutcome,
    ExecutionResult,
    FinishedOutcome,
    TaskSpec,
    TaskState,
    WorkerView,
)

_json_encode = msgspec.json.Encoder().encode


class PgQueueStore(PgReads):
    """Tasks and their executions in PostgreSQL; one per broker, each its own connection."""

    def __init__(
        self,
        db: Database,
        default_max_attempts: int,
        backoff: Backoff | None = None,
        node: str | None = None,
        listen: bool = True,
    ) -> None:
        self.db = db
        self.default_max_attempts = default_max_attempts
        self.backoff = backoff or Backoff()
        self.node = node or socket.gethostname()
        self.started: dict[int, tuple[int, int, int | None]] = {}  # execution: (at, pid, lease)
        self.scan_window = SCAN_WINDOW
        self.listener = (
            Listener(db.url, f"fleetd-listen@{self.node}", self.node) if listen else None
        )
        if self.listener is not None:
            self.listener.drain()  # connects and LISTENs now, before the first claim

    @classmethod
    def open(
        cls,
        url: str,
        default_max_attempts: int,
        backoff: Backoff | None = None,
        node: str | None = None,
        stop: Callable[[], bool] | None = None,
        wait: bool = True,
        listen: bool = True,
    ) -> PgQueueStore:
        """Connect (waiting out an outage unless `wait` is False), bring the schema up to date
        under the migration lock, and LISTEN."""
        node = node or socket.gethostname()
        db = Database(url, f"fleetd@{node}", stop, wait)
        db.run(lambda tx: None)  # the first connection, waited for like any outage
        assert db.conn is not None
        with connect(url, f"fleetd-migrate@{node}", autocommit=True) as conn:
            schema.migrate(conn)
        return cls(db, default_max_attempts, backoff, node, listen)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.store_started()
        if self.listener is not None:
            self.listener.close()
        self.db.close()

    def beat_node(self, workers: list[WorkerView], now: int) -> None:
        args = nodes.beat_args(self.node, workers, now)
        self.db.run(lambda tx: tx.execute(nodes.BEAT, args))

    def other_nodes(self, now: int) -> list[nodes.NodeBeat]:
        sql, args = nodes.others_query(self.node, now)
        return nodes.beats_of(self.db.run(lambda tx: tx.execute(sql, args).fetchall()))

    def wakeup_fd(self) -> int | None:
        return self.listener.fd() if self.listener is not None else None

    def drain_wakeups(self) -> bool:
        return self.listener.drain() if self.listener is not None else False

    # --- transactions ----------------------------------------------------------------------

    def _write(self, work: Callable[[Tx], object], notify: bool = False) -> object:
        """`work` in one transaction that also stores the start times kept since the last one
        (and, with `notify`, tells the other brokers at its commit)."""
        started = dict(self.started)

        def transaction(tx: Tx) -> object:
            if started:
                tx.executemany(
                    "UPDATE executions SET started_at = ?, agent_pid = ?"
                    " WHERE id = ? AND outcome = 'running'"
                    " AND lease_token = coalesce(?, lease_token)",
                    [(at, pid, ex, lease) for ex, (at, pid, lease) in started.items()],
                )
            result = work(tx)
            if notify:
                tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, self.node))
            return result

        result = self.db.run(transaction)
        for execution in started:
            self.started.pop(execution, None)
        return result

    def store_started(self) -> None:
        if self.started:
            self._write(lambda tx: None)

    # --- writes ----------------------------------------------------------------------------

    def enqueue(self, specs: list[TaskSpec], now: int) -> list[tuple[int, bool]]:
        """As the SQLite store's; a key enqueued at the same moment on another node gives its
        task (the unique index decides), never two."""
        if not specs:
            return []
        return self._write(lambda tx: self._enqueue_in(tx, specs, now), notify=True)  # type: ignore[return-value]

    def enqueue_and_claim(
        self, specs: list[TaskSpec], now: int, worker: str, lease_us: int, gate: Gate | None
    ) -> tuple[list[tuple[int, bool]], Claim | None]:
        """As the SQLite store's: the enqueue and an idle worker's claim in one transaction."""

        def transaction(tx: Tx) -> tuple[list[tuple[int, bool]], Claim | None]:
            created = self._enqueue_in(tx, specs, now) if specs else []
            return created, self._claim_in(tx, worker, now, lease_us, gate, None)

        return self._write(transaction, notify=True)  # type: ignore[return-value]

    def _enqueue_in(self, tx: Tx, specs: list[TaskSpec], now: int) -> list[tuple[int, bool]]:
        """All the rows in one round trip; then, in order, what a key names already and what
        the new tasks wait for (a task waits only for earlier ones, inserted by then)."""
        inserted = tx.returning_many(
            INSERT_TASK + " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            [task_values(spec, self.default_max_attempts, now) for spec in specs],
        )
        out: list[tuple[int, bool]] = []
        for spec, row in zip(specs, inserted, strict=True):
            if row is None:  # the key names a task already
                known = tx.execute(
                    "SELECT id, spec FROM tasks WHERE idempotency_key = ?", (spec.key,)
                ).fetchone()
                if not same_task(decode_spec(known[1]), spec):
                    raise KeyConflict(
                        f"key {spec.key!r} is task {known[0]}, enqueued with another spec: give "
                        f"this task another key (`fleetctl show {known[0]}` shows that one)"
                    )
                out.append((known[0], False))
                continue
            task = row[0]
            if spec.after:
                # Another node may be ending one of them now: locked, its end waits for this
                # commit (and its settle then sees these task_deps rows), or this reads its end.
                tx.execute(
                    "SELECT id FROM tasks WHERE id = ANY(?) ORDER BY id FOR NO KEY UPDATE",
                    (list(spec.after),),
                )
                link(tx, task, spec, now)  # type: ignore[arg-type]
            if spec.continues is not None:
                continue_thread(tx, task, spec)  # type: ignore[arg-type]
            out.append((task, True))
        return out

    def claim(
        self,
        worker: str,
        now: int,
        lease_us: int,
        gate: Gate | None = None,
        node: str | None = None,
    ) -> Claim | None:
        return self._write(lambda tx: self._claim_in(tx, worker, now, lease_us, gate, node))  # type: ignore[return-value]

    def _claim_in(
        self, tx: Tx, worker: str, now: int, lease_us: int, gate: Gate | None, node: str | None
    ) -> Claim | None:
        row = first_fit(tx, now, gate)
        if row is None:
            return None
        task_id, spec_json, executions, resume_from, _ = row
        attempt = executions + 1
        tx.execute(
            "UPDATE tasks SET state = 'running', attempts = attempts + 1, executions = ?,"
            " not_before = 0, started_at = coalesce(started_at, ?) WHERE id = ?",
            (attempt, now, task_id),
        )
        execution, lease = tx.execute(
            "INSERT INTO executions (task_id, attempt, worker, outcome, claimed_at,"
            " lease_expires_at, node, lease_token)"
            " VALUES (?, ?, ?, 'running', ?, ?, ?, nextval('lease_tokens'))"
            " RETURNING id, lease_token",
            (task_id, attempt, worker, now, now + lease_us, node or self.node),
        ).fetchone()
        return Claim(
            task=task_id,
            execution=execution,
            attempt=attempt,
            spec=decode_spec(spec_json),
            lease_expires_at=now + lease_us,
            resume=resume_of(tx, resume_from) if resume_from is not None else None,  # type: ignore[arg-type]
            lease=lease,
        )

    def renew(
        self, execution: int, worker: str, now: int, lease_us: int, lease: int | None = None
    ) -> bool:
        """Extend a running execution's lease; False if this node's worker no longer holds it
        (or `lease` is not its token: the lease was taken over), or if its task's cancel was
        asked for, perhaps on another node, whose broker cannot reach this worker: the broker
        then tells its worker to stop, as for a lost lease, within a heartbeat."""
        return self._write(
            lambda tx: (
                tx.execute(
                    "UPDATE executions e SET lease_expires_at = ? FROM tasks t"
                    " WHERE e.id = ? AND e.worker = ? AND e.node = ? AND e.outcome = 'running'"
                    " AND e.lease_token = coalesce(?, e.lease_token)"
                    " AND t.id = e.task_id AND t.cancel_requested = 0",
                    (now + lease_us, execution, worker, self.node, lease),
                ).rowcount
                == 1
            )
        )  # type: ignore[return-value]

    def mark_started(
        self, execution: int, started_at: int, pid: int, lease: int | None = None
    ) -> None:
        """Kept for the next write transaction, as on SQLite; a stale `lease` writes nothing."""
        self.started[execution] = (started_at, pid, lease)

    def finish(
        self,
        execution: int,
        outcome: FinishedOutcome,
        result: ExecutionResult,
        now: int,
        claim_for: str | None = None,
        lease_us: int = 0,
        gate: Gate | None = None,
        lease: int | None = None,
    ) -> tuple[TaskState | None, Claim | None]:
        """Close an execution and optionally claim the worker's next task, in one transaction;
        (None, None) for a resent result or a stale `lease`."""

        def transaction(tx: Tx) -> tuple[TaskState | None, Claim | None]:
            state = self._close(tx, execution, outcome, result, now, lease)
            claim = (
                self._claim_in(tx, claim_for, now, lease_us, gate, None)
                if claim_for and state is not None
                else None
            )
            return state, claim

        # Any finish may make room (a limit, a dependency, a retry): the others are told.
        return self._write(transaction, notify=True)  # type: ignore[return-value]

    def _close(
        self,
        tx: Tx,
        execution: int,
        outcome: ExecutionOutcome,
        result: ExecutionResult,
        now: int,
        lease: int | None = None,
    ) -> TaskState | None:
        row = tx.execute(
            "SELECT e.task_id, e.outcome, t.attempts, t.max_attempts, t.cancel_requested,"
            " t.dependents, e.lease_token FROM executions e JOIN tasks t ON t.id = e.task_id"
            " WHERE e.id = ? FOR UPDATE",
            (execution,),
        ).fetchone()
        if row is None or row[1] != "running" or lease not in (None, row[6]):
            return None
        task_id, _, attempts, max_attempts, cancel_requested, dependents, _ = row
        result_json = _json_encode(result).decode()
        tx.execute(
            "UPDATE executions SET outcome = ?, finished_at = ?, result = ?,"
            " lease_expires_at = NULL, tokens = ?, cost_usd = ? WHERE id = ?",
            (
                outcome,
                now,
                result_json,
                result.usage.total_tokens,
                result.cost_usd or 0.0,
                execution,
            ),
        )
        transient = result.failure_class == "transient"
        state = task_state_after(outcome, attempts, max_attempts, bool(cancel_requested), transient)
        if state == "queued":
            spent = attempts - 1 if outcome == "interrupted" else attempts
            not_before = now + self.backoff.delay_us(attempts) if outcome == "failed" else 0
            tx.execute(
                "UPDATE tasks SET state = 'queued', attempts = ?, not_before = ? WHERE id = ?",
                (spent, not_before, task_id),
            )
        else:
            tx.execute(
                "UPDATE tasks SET state = ?, finished_at = ?, result = ? WHERE id = ?",
                (state, now, result_json, task_id),
            )
            if dependents:
                settle(tx, task_id, state, now)  # type: ignore[arg-type]
        return state

    def lose_worker(self, worker: str, reason: str, now: int) -> list[Closed]:
        """Close as `lost` the running executions of this node's worker (names repeat across
        nodes: worker-1 is on every host)."""
        return self._lose(
            "node = ? AND worker = ? AND outcome = 'running'", (self.node, worker), reason, now
        )

    def lose_expired(self, now: int) -> list[Closed]:
        """Close as `lost` every running execution, of any node, whose lease ran out."""
        return self._lose(
            "outcome = 'running' AND lease_expires_at < ?",
            (now,),
            "lease expired: the worker stopped renewing it",
            now,
        )

    def lose_execution(self, execution: int, reason: str, now: int) -> list[Closed]:
        return self._lose("id = ? AND outcome = 'running'", (execution,), reason, now)

    def lose_all_running(self, reason: str, now: int) -> list[Closed]:
        """At this node's start: its executions still running belonged to its previous daemon
        (the other nodes' are theirs, and live)."""
        return self._lose("node = ? AND outcome = 'running'", (self.node,), reason, now)

    def _lose(self, where: str, args: tuple, reason: str, now: int) -> list[Closed]:
        def transaction(tx: Tx) -> list[Closed]:
            rows = tx.execute(
                f"SELECT id, task_id, worker FROM executions WHERE {where}"
                " ORDER BY id FOR UPDATE SKIP LOCKED",  # another broker's, it closes them
                args,
            ).fetchall()
            closed = []
            for execution, task_id, worker in rows:
                lost = ExecutionResult(error="lost", reason=reason)
                state = self._close(tx, execution, "lost", lost, now)
                closed.append(Closed(task_id, execution, worker, state))
            if closed:  # their tasks went back to the queue: news for every broker
                tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, self.node))
            return closed

        return self._write(transaction)  # type: ignore[return-value]

    def cancel(self, task: int, now: int) -> tuple[TaskState, int | None, str | None] | None:
        def transaction(tx: Tx) -> tuple[TaskState, int | None, str | None] | None:
            row = tx.execute(
                "SELECT state, dependents FROM tasks WHERE id = ? FOR UPDATE", (task,)
            ).fetchone()
            if row is None:
                return None
            state, dependents = row
            if state == "queued":
                tx.execute(
                    "UPDATE tasks SET state = 'cancelled', finished_at = ? WHERE id = ?",
                    (now, task),
                )
                if dependents:
                    settle(tx, task, "cancelled", now)  # type: ignore[arg-type]
                return "cancelled", None, None
            if state != "running":
                return state, None, None
            tx.execute("UPDATE tasks SET cancel_requested = 1 WHERE id = ?", (task,))
            running = tx.execute(
                "SELECT id, worker FROM executions WHERE task_id = ? AND outcome = 'running'",
                (task,),
            ).fetchone()
            return "running", running[0] if running else None, running[1] if running else None

        return self._write(transaction)  # type: ignore[return-value]

    def retry(self, task: int, resume: bool, now: int) -> Retried | None:
        def transaction(tx: Tx) -> Retried | None:
            row = tx.execute(
                "SELECT state, spec FROM tasks WHERE id = ? FOR UPDATE", (task,)
            ).fetchone()
            if row is None:
                return None
            state, spec_json = row
            if state not in TERMINAL_STATES:
                return Retried(refused=retry_refusal(task, state))
            source = None
            if resume:
                source, problem = resume_source(tx, task, decode_spec(spec_json))  # type: ignore[arg-type]
                if problem is not None:
                    return Retried(refused=problem)
            tx.execute(
                "UPDATE tasks SET state = 'queued', not_before = 0, cancel_requested = 0,"
                " finished_at = NULL, result = NULL, resume_from = ?,"
                " max_attempts = CASE WHEN max_attempts > attempts"
                " THEN max_attempts ELSE attempts + 1 END WHERE id = ?",
                (source.execution if source else None, task),
            )
            return Retried(state="queued", resume=source)

        return self._write(transaction, notify=True)  # type: ignore[return-value]

    def set_priority(self, task: int, priority: int) -> TaskState | None:
        def transaction(tx: Tx) -> TaskState | None:
            row = tx.execute("SELECT state FROM tasks WHERE id = ? FOR UPDATE", (task,)).fetchone()
            if row is None:
                return None
            if row[0] == "queued":
                tx.execute("UPDATE tasks SET priority = ? WHERE id = ?", (priority, task))
            return row[0]

        return self._write(transaction, notify=True)  # type: ignore[return-value]
