"""What an operator changes in `queue.db`: a cancel, a retry, a new priority (a part of
`QueueStore`, each one write transaction of its own)."""

from __future__ import annotations

import contextlib

import apsw

from fleetd.broker.dependencies import settle
from fleetd.broker.policy import retry_refusal
from fleetd.broker.rows import Retried, decode_spec, resume_source
from shared.models import TERMINAL_STATES, TaskState


class OperatorChanges:
    """`fleetctl cancel`, `retry` and `priority` against the queue."""

    def _write(self) -> contextlib.AbstractContextManager[apsw.Connection]:
        raise NotImplementedError  # the QueueStore's write transaction

    def cancel(self, task: int, now: int) -> tuple[TaskState, int | None, str | None] | None:
        """Cancel a task: a queued one at once; a running one is marked, its execution returned.

        Returns (state, running execution, its worker), or None for an unknown task.
        """
        with self._write() as conn:
            row = conn.execute(
                "SELECT state, dependents FROM tasks WHERE id = ?", (task,)
            ).fetchone()
            if row is None:
                return None
            state, dependents = row
            if state == "queued":
                conn.execute(
                    "UPDATE tasks SET state = 'cancelled', finished_at = ? WHERE id = ?",
                    (now, task),
                )
                if dependents:
                    settle(conn, task, "cancelled", now)
                return "cancelled", None, None
            if state != "running":
                return state, None, None
            conn.execute("UPDATE tasks SET cancel_requested = 1 WHERE id = ?", (task,))
            running = conn.execute(
                "SELECT id, worker FROM executions WHERE task_id = ? AND outcome = 'running'",
                (task,),
            ).fetchone()
            return "running", running[0] if running else None, running[1] if running else None

    def retry(self, task: int, resume: bool, now: int) -> Retried | None:
        """Queue a finished task again with one more attempt; None for an unknown task.

        With `resume`, its next attempts continue the Codex thread of its latest execution
        that started one; without, they start afresh.
        """
        with self._write() as conn:
            row = conn.execute("SELECT state, spec FROM tasks WHERE id = ?", (task,)).fetchone()
            if row is None:
                return None
            state, spec_json = row
            if state not in TERMINAL_STATES:
                return Retried(refused=retry_refusal(task, state))
            source = None
            if resume:
                source, problem = resume_source(conn, task, decode_spec(spec_json))
                if problem is not None:
                    return Retried(refused=problem)
            conn.execute(
                "UPDATE tasks SET state = 'queued', not_before = 0, cancel_requested = 0,"
                " finished_at = NULL, result = NULL, resume_from = ?,"
                " max_attempts = CASE WHEN max_attempts > attempts"
                " THEN max_attempts ELSE attempts + 1 END WHERE id = ?",
                (source.execution if source else None, task),
            )
        return Retried(state="queued", resume=source)

    def set_priority(self, task: int, priority: int) -> TaskState | None:
        """Change a task's priority (it matters while it is queued); None for an unknown task."""
        with self._write() as conn:
            row = conn.execute("SELECT state FROM tasks WHERE id = ?", (task,)).fetchone()
            if row is None:
                return None
            if row[0] == "queued":
                conn.execute("UPDATE tasks SET priority = ? WHERE id = ?", (priority, task))
            return row[0]
