"""The task queue: tasks and executions in APSW SQLite, behind a small interface.

Only the broker process opens this store. Every state change is one `BEGIN IMMEDIATE`
transaction. The SQL avoids anything only SQLite can do, so a PostgreSQL store (claims with
`FOR UPDATE SKIP LOCKED`) can sit beside it with the same methods.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import apsw
import msgspec

from fleetd.broker.dependencies import link, settle
from fleetd.broker.operator_changes import OperatorChanges
from fleetd.broker.policy import Backoff, task_state_after
from fleetd.broker.reads import ScheduleReads, first_fit, same_task
from fleetd.broker.rows import (
    INSERT_TASK,
    Claim,
    Closed,
    continue_thread,
    decode_spec,
    resume_of,
    task_values,
)
from fleetd.broker.scheduling import Gate
from fleetd.broker.schema import MIGRATIONS
from fleetd.broker.task_reads import SCAN_WINDOW, TaskReads
from fleetd.runtime.db import WalCheckpointer, immediate, open_database
from fleetd.stores.nodes import NodeBeat
from shared.errors import FleetError
from shared.models import (
    ExecutionOutcome,
    ExecutionResult,
    FinishedOutcome,
    TaskSpec,
    TaskState,
    WorkerView,
)

_json_encode = msgspec.json.Encoder().encode


class KeyConflict(FleetError):
    """An idempotency key already names a task with another spec."""


class QueueStore(ScheduleReads, TaskReads, OperatorChanges):
    """Tasks and their executions; the only writer of `queue.db`."""

    def __init__(
        self,
        conn: apsw.Connection,
        default_max_attempts: int,
        backoff: Backoff | None = None,
        node: str | None = None,
    ) -> None:
        self.conn = conn
        self.node = node or socket.gethostname()  # stamped on its executions
        self.default_max_attempts = default_max_attempts
        self.backoff = backoff or Backoff()
        self.started: dict[int, tuple[int, int]] = {}  # execution: (started_at, agent pid)
        self.scan_window = SCAN_WINDOW  # ids one filtered page may look at
        self.checkpointer: WalCheckpointer | None = None  # opened from a path: `open`

    @classmethod
    def open(
        cls,
        path: Path,
        default_max_attempts: int,
        backoff: Backoff | None = None,
        node: str | None = None,
    ) -> QueueStore:
        store = cls(open_database(path, MIGRATIONS), default_max_attempts, backoff, node)
        store.checkpointer = WalCheckpointer(store.conn, path)
        return store

    def close(self) -> None:
        self.store_started()
        if self.checkpointer is not None:
            self.checkpointer.close()
        self.conn.close()

    # --- writes ------------------------------------------------------------------------------

    def enqueue(self, specs: list[TaskSpec], now: int) -> list[tuple[int, bool]]:
        """Insert tasks in order; a known idempotency key returns its task, uncreated.

        A known key with another spec raises KeyConflict, and none of `specs` is stored.
        """
        with self._write() as conn:
            return self._enqueue_in(conn, specs, now)

    def enqueue_and_claim(
        self, specs: list[TaskSpec], now: int, worker: str, lease_us: int, gate: Gate | None
    ) -> tuple[list[tuple[int, bool]], Claim | None]:
        """`enqueue`, then `claim` for a waiting worker, in one transaction: the path from an
        enqueue to an idle worker's agent pays one commit, not two."""
        with self._write() as conn:
            created = self._enqueue_in(conn, specs, now)
            return created, self._claim_in(conn, worker, now, lease_us, gate)

    def _enqueue_in(
        self, conn: apsw.Connection, specs: list[TaskSpec], now: int
    ) -> list[tuple[int, bool]]:
        out: list[tuple[int, bool]] = []
        for spec in specs:
            if spec.key is not None:
                row = conn.execute(
                    "SELECT id, spec FROM tasks WHERE idempotency_key = ?", (spec.key,)
                ).fetchone()
                if row is not None and not same_task(decode_spec(row[1]), spec):
                    raise KeyConflict(
                        f"key {spec.key!r} is task {row[0]}, enqueued with another spec: "
                        "give this task another key (`fleetctl show "
                        f"{row[0]}` shows that one)"
                    )
                if row is not None:
                    out.append((row[0], False))
                    continue
            conn.execute(INSERT_TASK, task_values(spec, self.default_max_attempts, now))
            task = conn.last_insert_rowid()
            if spec.after:
                link(conn, task, spec, now)
            if spec.continues is not None:
                continue_thread(conn, task, spec)
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
        """Take the first queued task (priority, then FIFO) that the gate lets start, as a new
        running execution of `node` (default: this store's)."""
        with self._write() as conn:
            return self._claim_in(conn, worker, now, lease_us, gate, node)

    def _claim_in(
        self,
        conn: apsw.Connection,
        worker: str,
        now: int,
        lease_us: int,
        gate: Gate | None,
        node: str | None = None,
    ) -> Claim | None:
        row = first_fit(conn, now, gate)
        if row is None:
            return None
        task_id, spec_json, executions, resume_from = row
        attempt = executions + 1
        conn.execute(
            "UPDATE tasks SET state = 'running', attempts = attempts + 1, executions = ?,"
            " not_before = 0, started_at = COALESCE(started_at, ?) WHERE id = ?",
            (attempt, now, task_id),
        )
        conn.execute(
            "INSERT INTO executions (task_id, attempt, worker, outcome, claimed_at,"
            " lease_expires_at, node) VALUES (?, ?, ?, 'running', ?, ?, ?)",
            (task_id, attempt, worker, now, now + lease_us, node or self.node),
        )
        execution = conn.last_insert_rowid()
        return Claim(
            task=task_id,
            execution=execution,
            attempt=attempt,
            spec=decode_spec(spec_json),
            lease_expires_at=now + lease_us,
            resume=resume_of(conn, resume_from) if resume_from is not None else None,
            lease=execution,  # one broker per file: each claim's new execution is its fence
        )

    def renew(
        self, execution: int, worker: str, now: int, lease_us: int, lease: int | None = None
    ) -> bool:
        """Extend a running execution's lease; False if the worker no longer holds it (or
        `lease` is not its token)."""
        if lease is not None and lease != execution:
            return False
        with self._write() as conn:
            conn.execute(
                "UPDATE executions SET lease_expires_at = ?"
                " WHERE id = ? AND worker = ? AND outcome = 'running'",
                (now + lease_us, execution, worker),
            )
            return conn.changes() == 1

    def mark_started(
        self, execution: int, started_at: int, pid: int, lease: int | None = None
    ) -> None:
        """Kept for the next write transaction (a no-op task's Finished comes right after, and
        the lease check writes every second), saving a commit per task; a read stores it
        first. A broker crash loses the start times of the last second's runs, which it
        marks lost at its restart anyway. A stale `lease` is ignored."""
        if lease is None or lease == execution:
            self.started[execution] = (started_at, pid)

    def store_started(self) -> None:
        """Write the start times not yet written, so that a read sees them."""
        if self.started:
            with self._write():
                pass

    @contextlib.contextmanager
    def _write(self) -> Iterator[apsw.Connection]:
        """A write transaction that also stores the start times kept since the last one."""
        started = self.started
        with immediate(self.conn) as conn:
            if started:
                conn.executemany(
                    "UPDATE executions SET started_at = ?, agent_pid = ?"
                    " WHERE id = ? AND outcome = 'running'",
                    [(at, pid, execution) for execution, (at, pid) in started.items()],
                )
            yield conn
        if started:
            self.started = {}

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
        """Close an execution with the worker's outcome; optionally claim the worker's next task.

        Returns the task's new state (None if the execution was already closed: a resent
        result, or a stale `lease`) and the next claim. Both happen in one transaction.
        """
        if lease is not None and lease != execution:
            return None, None
        with self._write() as conn:
            state = self._close(conn, execution, outcome, result, now)
            # A resent result (state None) must not claim: its first copy already did.
            claim = (
                self._claim_in(conn, claim_for, now, lease_us, gate)
                if claim_for and state is not None
                else None
            )
        return state, claim

    def _close(
        self,
        conn: apsw.Connection,
        execution: int,
        outcome: ExecutionOutcome,
        result: ExecutionResult,
        now: int,
    ) -> TaskState | None:
        row = conn.execute(
            "SELECT e.task_id, e.outcome, t.attempts, t.max_attempts, t.cancel_requested,"
            " t.dependents FROM executions e JOIN tasks t ON t.id = e.task_id WHERE e.id = ?",
            (execution,),
        ).fetchone()
        if row is None or row[1] != "running":
            return None
        task_id, _, attempts, max_attempts, cancel_requested, dependents = row
        result_json = _json_encode(result).decode()
        conn.execute(
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
            # An interrupted run (fleet stopped) does not spend an attempt.
            spent = attempts - 1 if outcome == "interrupted" else attempts
            # A transient failure waits out a backoff; other returns are claimable at once.
            not_before = now + self.backoff.delay_us(attempts) if outcome == "failed" else 0
            conn.execute(
                "UPDATE tasks SET state = 'queued', attempts = ?, not_before = ? WHERE id = ?",
                (spent, not_before, task_id),
            )
        else:
            conn.execute(
                "UPDATE tasks SET state = ?, finished_at = ?, result = ? WHERE id = ?",
                (state, now, result_json, task_id),
            )
            if dependents:
                settle(conn, task_id, state, now)
        return state

    def lose_worker(self, worker: str, reason: str, now: int) -> list[Closed]:
        """Close as `lost` every running execution of a worker that died."""
        return self._lose("worker = ? AND outcome = 'running'", (worker,), reason, now)

    def lose_expired(self, now: int) -> list[Closed]:
        """Close as `lost` every running execution whose lease ran out."""
        return self._lose(
            "outcome = 'running' AND lease_expires_at < ?",
            (now,),
            "lease expired: the worker stopped renewing it",
            now,
        )

    def lose_execution(self, execution: int, reason: str, now: int) -> list[Closed]:
        return self._lose("id = ? AND outcome = 'running'", (execution,), reason, now)

    def lose_all_running(self, reason: str, now: int) -> list[Closed]:
        """At daemon start: every execution still running belonged to the previous daemon."""
        return self._lose("outcome = 'running'", (), reason, now)

    def _lose(self, where: str, args: tuple, reason: str, now: int) -> list[Closed]:
        closed: list[Closed] = []
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT id, task_id, worker FROM executions WHERE {where}", args
            ).fetchall()
            for execution, task_id, worker in rows:
                result = ExecutionResult(error="lost", reason=reason)
                state = self._close(conn, execution, "lost", result, now)
                closed.append(Closed(task_id, execution, worker, state))
        return closed

    def wakeup_fd(self) -> int | None:
        return None  # this broker is the queue's only writer: nothing else makes news

    def drain_wakeups(self) -> bool:
        return False

    def beat_node(self, workers: list[WorkerView], now: int) -> None:
        """One host, one node: its broker knows its own workers, and no other node reads a
        heartbeat here (the PostgreSQL store keeps them in its `nodes` table)."""

    def other_nodes(self, now: int) -> list[NodeBeat]:
        """No other node shares an SQLite queue."""
        return []
