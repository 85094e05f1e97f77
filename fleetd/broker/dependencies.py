"""Tasks that wait for others (`--after`, `--after-any`): their rows in `task_deps`, and what
becomes of a dependent when the task it waits for ends.

A waiting task stays `queued` with `not_before` at the end of time (`WAITING`), so the claim
query needs no join and stays on its index; when its last dependency settles, its own
`not_before` (kept in `ready_at`) comes back. Cycles cannot form: a task may only wait for
tasks that exist when it is enqueued, and those were enqueued before it.
"""

from __future__ import annotations

import apsw
import msgspec

from shared.errors import FleetError
from shared.models import INT64_MAX, TERMINAL_STATES, ExecutionResult, TaskSpec, TaskState

WAITING = INT64_MAX  # the not_before of a task whose dependencies have not all settled

_json_encode = msgspec.json.Encoder().encode


class UnknownDependency(FleetError):
    """An `after` names no task that exists before this one."""


def link(conn: apsw.Connection, task: int, spec: TaskSpec, now: int) -> None:
    """Record what a new task waits for; one that cannot run any more is cancelled now."""
    waiting = 0
    refusal = None
    for after in dict.fromkeys(spec.after):  # in order, once each
        row = conn.execute("SELECT state FROM tasks WHERE id = ?", (after,)).fetchone()
        if row is None or after >= task:
            raise UnknownDependency(
                f"--after {after}: no such task (a task can wait only for tasks already"
                " enqueued, so waits never form a cycle); `fleetctl list` shows the tasks"
            )
        state = row[0]
        if state not in TERMINAL_STATES:
            conn.execute(
                "INSERT INTO task_deps (after_id, task_id, any_outcome) VALUES (?, ?, ?)",
                (after, task, int(spec.after_any)),
            )
            conn.execute("UPDATE tasks SET dependents = 1 WHERE id = ?", (after,))
            waiting += 1
        elif state != "succeeded" and not spec.after_any:
            refusal = refusal or _reason(after, state)
    if refusal is not None:
        _cancel(conn, task, refusal, now)
    elif waiting:
        conn.execute(
            "UPDATE tasks SET waiting = ?, not_before = ? WHERE id = ?", (waiting, WAITING, task)
        )


def settle(conn: apsw.Connection, task: int, state: TaskState, now: int) -> None:
    """A task ended in `state`: release or cancel the tasks that wait for it, and theirs.
    Called only for a task marked as having `dependents`."""
    ended = [(task, state)]
    while ended:
        after, after_state = ended.pop()
        rows = conn.execute(
            "SELECT d.task_id, d.any_outcome FROM task_deps d JOIN tasks t ON t.id = d.task_id"
            " WHERE d.after_id = ? AND t.state = 'queued'",
            (after,),
        ).fetchall()
        for dependent, any_outcome in rows:
            if after_state == "succeeded" or any_outcome:
                _release_one(conn, dependent)
            else:
                _cancel(conn, dependent, _reason(after, after_state), now)
                ended.append((dependent, "cancelled"))  # (without a `dependents` check: rare)
        conn.execute("DELETE FROM task_deps WHERE after_id = ?", (after,))


def _release_one(conn: apsw.Connection, task: int) -> None:
    conn.execute(
        "UPDATE tasks SET waiting = waiting - 1,"
        " not_before = CASE WHEN waiting <= 1 THEN ready_at ELSE not_before END WHERE id = ?",
        (task,),
    )


def _cancel(conn: apsw.Connection, task: int, reason: str, now: int) -> None:
    result = ExecutionResult(error="dependency did not succeed", reason=reason)
    conn.execute(
        "UPDATE tasks SET state = 'cancelled', waiting = 0, finished_at = ?, result = ?"
        " WHERE id = ?",
        (now, _json_encode(result).decode(), task),
    )


def _reason(after: int, state: str) -> str:
    return (
        f"task {after}, which this task runs after, ended {state}"
        " (enqueue with --after-any to run after it whatever its outcome)"
    )
