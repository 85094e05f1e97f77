"""Reads of `queue.db` beside the store's core: the claim's first fit under a gate, whether
an idempotency key's task is the one asked again, and the spend of finished executions."""

from __future__ import annotations

import apsw
import msgspec

from fleetd.broker import tally
from fleetd.broker.budgets import Spend
from fleetd.broker.rows import decode_spec
from fleetd.broker.scheduling import Gate, decode_scope
from shared.messages import UsageGroup
from shared.models import TaskSpec, UsageRow, rfc3339

CLAIM_ORDER = (
    "SELECT id, spec, executions, resume_from FROM tasks"
    " WHERE state = 'queued' AND not_before <= ?{} ORDER BY priority DESC, id"
)


def first_fit(conn: apsw.Connection, now: int, gate: Gate | None) -> tuple | None:
    """The first due queued task in claim order that the gate lets start: one query on the
    `tasks_claim` index, read until a task fits (with no limit or hold, the first row).
    Agent kinds and repositories that cannot start anything now are left out in the query
    itself (its `agent` and `repo` columns), so a claim does not read past their tasks."""
    if gate is None or gate.open:
        return conn.execute(CLAIM_ORDER.format("") + " LIMIT 1", (now,)).fetchone()
    running_rows = conn.execute("SELECT spec FROM tasks WHERE state = 'running'").fetchall()
    running = gate.counts(decode_scope(spec) for (spec,) in running_rows)
    closed = gate.closed(running)
    if closed.everything:
        return None
    where = "".join(
        f" AND {column} NOT IN ({', '.join('?' * len(values))})"
        for column, values in (("agent", closed.agents), ("repo", closed.repos))
        if values
    )
    cursor = conn.execute(CLAIM_ORDER.format(where), (now, *closed.agents, *closed.repos))
    try:
        for row in cursor:
            if gate.fits(decode_scope(row[1]), running):
                return row
        return None
    finally:
        cursor.close()


def same_task(stored: TaskSpec, asked: TaskSpec) -> bool:
    """Whether a key's stored spec is the one asked again: a relative `--not-before` resolves
    anew each time, and the priority may have been changed since."""
    plain = {"not_before": None, "priority": 0}
    return msgspec.structs.replace(stored, **plain) == msgspec.structs.replace(asked, **plain)


def spend_since(conn: apsw.Connection, since: int) -> list[Spend]:
    """Every execution that finished at or after `since` with some spend, and its task's spec."""
    rows = conn.execute(
        "SELECT e.finished_at, e.tokens, e.cost_usd, t.spec FROM executions e"
        " JOIN tasks t ON t.id = e.task_id"
        " WHERE e.finished_at >= ? AND (e.tokens > 0 OR e.cost_usd > 0)",
        (since,),
    ).fetchall()
    return [Spend(at, tokens, cost, decode_spec(spec)) for at, tokens, cost, spec in rows]


def usage(conn: apsw.Connection, since: int, by: UsageGroup) -> list[UsageRow]:
    """Tokens and cost of the executions finished since `since`, grouped `by`."""
    rows = conn.execute(
        "SELECT e.finished_at, e.tokens, e.cost_usd, e.task_id, t.spec FROM executions e"
        " JOIN tasks t ON t.id = e.task_id WHERE e.finished_at >= ?",
        (since,),
    ).fetchall()
    groups: dict[str, list[tuple[int, int, float]]] = {}
    specs: dict[int, TaskSpec] = {}  # each task's spec decoded once, for all its attempts
    for finished_at, tokens, cost, task, spec_json in rows:
        spec = specs.get(task) or specs.setdefault(task, decode_spec(spec_json))
        for key in _group_keys(by, finished_at, task, spec):
            groups.setdefault(key, []).append((task, tokens, cost))
    out = [
        UsageRow(
            key=key,
            executions=len(items),
            tasks=len({task for task, _, _ in items}),
            tokens=sum(tokens for _, tokens, _ in items),
            cost_usd=round(sum(cost for _, _, cost in items), 6),
        )
        for key, items in groups.items()
    ]
    return sorted(out, key=lambda row: (-row.cost_usd, -row.tokens, row.key))


def _group_keys(by: UsageGroup, finished_at: int, task: int, spec: TaskSpec) -> list[str]:
    match by:
        case "agent":
            return [spec.agent]
        case "repo":
            return [spec.repo or "(no repository)"]
        case "label":
            return [f"{k}={v}" for k, v in sorted(spec.labels.items())] or ["(no label)"]
        case "day":
            return [(rfc3339(finished_at) or "")[:10]]
        case _:
            return [str(task)]


class ScheduleReads:
    """The queue's reads for scheduling, budgets and `usage` (a part of `QueueStore`)."""

    conn: apsw.Connection

    def running_spec(self, execution: int) -> TaskSpec | None:
        """The spec of a running execution's task; None once the execution is closed."""
        row = self.conn.execute(
            "SELECT t.spec FROM executions e JOIN tasks t ON t.id = e.task_id"
            " WHERE e.id = ? AND e.outcome = 'running'",
            (execution,),
        ).fetchone()
        return decode_spec(row[0]) if row else None

    def spend_since(self, since: int) -> list[Spend]:
        return spend_since(self.conn, since)

    def usage(self, since: int, by: UsageGroup) -> list[UsageRow]:
        return usage(self.conn, since, by)

    def tally_rows(self, after: int, running: list[int]) -> list[tuple]:
        return tally.tally_rows(self.conn, after, running)

    def oldest_queued(self) -> int | None:
        return tally.oldest_queued(self.conn)

    def running_specs(self) -> list[TaskSpec]:
        """The specs of the running tasks (what the concurrency limits count)."""
        rows = self.conn.execute("SELECT spec FROM tasks WHERE state = 'running'").fetchall()
        return [decode_spec(spec) for (spec,) in rows]
