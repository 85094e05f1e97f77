"""Rows of `queue.db` read back as the shared views, a resumable attempt found in them, and
what the store's claims, closes and retries return."""

from __future__ import annotations

from dataclasses import dataclass, field

import apsw
import msgspec
from loguru import logger

from fleetd.broker.dependencies import WAITING, UnknownDependency
from fleetd.broker.policy import no_thread, not_resumable
from shared.models import (
    ExecutionResult,
    ExecutionView,
    ResumeFrom,
    TaskSpec,
    TaskState,
    TaskView,
)

TASK_COLUMNS = (
    "id, state, spec, attempts, enqueued_at, started_at, finished_at, result, not_before,"
    " priority, waiting"
)
EXECUTION_COLUMNS = (
    "id, attempt, worker, outcome, claimed_at, started_at, finished_at, result, task_id, node"
)


_decode_spec = msgspec.json.Decoder(TaskSpec).decode
UNREADABLE_SPEC = "the stored spec of this task is no longer valid"


_json_encode = msgspec.json.Encoder().encode

# A new task's row, the same on every store (the PostgreSQL store adds its ON CONFLICT).
INSERT_TASK = (
    "INSERT INTO tasks (state, spec, idempotency_key, max_attempts, enqueued_at,"
    " priority, not_before, ready_at, agent, repo)"
    " VALUES ('queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def task_values(spec: TaskSpec, default_max_attempts: int, now: int) -> tuple:
    """INSERT_TASK's values for `spec` enqueued at `now`."""
    return (
        _json_encode(spec).decode(),
        spec.key,
        spec.max_attempts or default_max_attempts,
        now,
        spec.priority,
        spec.not_before or 0,
        spec.not_before or 0,
        spec.agent,
        spec.repo.rstrip("/") if spec.repo else None,
    )


def decode_spec(spec_json: str | bytes) -> TaskSpec:
    """A stored spec; one stored before its values were bounded (a NUL byte in its argv, say)
    reads as a command task that cannot run, so that listing or claiming it never fails."""
    try:
        return _decode_spec(spec_json)
    except msgspec.ValidationError as exc:
        logger.warning("{}: {}", UNREADABLE_SPEC, exc)
        return TaskSpec(prompt=f"({UNREADABLE_SPEC}: {exc})", agent="command")


decode_result = msgspec.json.Decoder(ExecutionResult).decode


def resume_source(
    conn: apsw.Connection, task: int, spec: TaskSpec
) -> tuple[ResumeFrom | None, str | None]:
    """The latest execution of a task that started a Codex thread (or a Claude Code session),
    or why there is none."""
    if spec.agent not in ("codex", "claude"):
        return None, not_resumable(task, spec.agent)
    rows = conn.execute(
        "SELECT id FROM executions WHERE task_id = ? AND result IS NOT NULL ORDER BY id DESC",
        (task,),
    ).fetchall()
    for (execution,) in rows:
        source = resume_of(conn, execution)
        if source is not None:
            return source, None
    return None, no_thread(task)


def resume_of(conn: apsw.Connection, execution: int) -> ResumeFrom | None:
    """What continuing an execution's Codex thread needs, or None if it started no thread."""
    row = conn.execute("SELECT result FROM executions WHERE id = ?", (execution,)).fetchone()
    result = decode_result(row[0]) if row and row[0] else None
    if result is None or result.thread_id is None:
        return None
    return ResumeFrom(
        execution=execution,
        thread_id=result.thread_id,
        workspace=result.workspace.path if result.workspace else None,
        session_file=result.session_file,
        thread_usage=result.thread_usage,
    )


def task_view(row: tuple) -> TaskView:
    task_id, state, spec, attempts, enqueued_at, started_at, finished_at, result = row[:8]
    not_before, priority, waiting = row[8:]
    due = not_before if state == "queued" and 0 < not_before < WAITING else None
    return TaskView(
        id=task_id,
        state=state,
        spec=decode_spec(spec),
        attempts=attempts,
        enqueued_at=enqueued_at,
        started_at=started_at,
        finished_at=finished_at,
        result=decode_result(result) if result else None,
        not_before=due,
        priority=priority,
        waiting=waiting if state == "queued" else 0,
    )


def execution_view(row: tuple) -> ExecutionView:
    execution, attempt, worker, outcome, claimed, started, finished, result, _, node = row
    return ExecutionView(
        id=execution,
        attempt=attempt,
        worker=worker,
        outcome=outcome,
        claimed_at=claimed,
        started_at=started,
        finished_at=finished,
        result=decode_result(result) if result else None,
        node=node,
    )


@dataclass(frozen=True)
class Claim:
    """A task handed to a worker as a new execution."""

    task: int
    execution: int
    attempt: int
    spec: TaskSpec
    lease_expires_at: int
    resume: ResumeFrom | None = None
    # The fencing token of this claim's lease (SQLite: the execution id; PostgreSQL: from a
    # sequence); left out of comparisons, which are about what was claimed.
    lease: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Closed:
    """An execution closed by the queue (lost or interrupted), and where its task went."""

    task: int
    execution: int
    worker: str | None
    task_state: TaskState | None  # None: it was closed already


@dataclass(frozen=True)
class Retried:
    """What `retry` did: the task queued again (and what it resumes), or why it refused."""

    state: TaskState | None = None
    resume: ResumeFrom | None = None
    refused: str | None = None


def continue_thread(conn: apsw.Connection, task: int, spec: TaskSpec) -> None:
    """A task that continues an earlier one resumes that task's latest agent thread."""
    assert spec.continues is not None
    row = conn.execute("SELECT spec FROM tasks WHERE id = ?", (spec.continues,)).fetchone()
    if row is None or spec.continues >= task:
        raise UnknownDependency(
            f"continues {spec.continues}: no such task (only an earlier task's thread can be "
            "continued); `fleetctl list` shows the tasks"
        )
    earlier = decode_spec(row[0])
    if earlier.agent != spec.agent:
        return  # another agent cannot take that thread: this run starts fresh
    source, _ = resume_source(conn, spec.continues, earlier)
    if source is not None:
        conn.execute("UPDATE tasks SET resume_from = ? WHERE id = ?", (source.execution, task))
