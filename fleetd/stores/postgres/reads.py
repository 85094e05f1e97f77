"""The PostgreSQL queue's reads and its claim's first fit: the SQLite store's queries where
they are plain SQL (the same helpers, through `Tx`), PostgreSQL's own where JSON is read or
rows are locked."""

from __future__ import annotations

import msgspec

from fleetd.broker import reads as sqlite_reads
from fleetd.broker.budgets import Spend
from fleetd.broker.rows import (
    EXECUTION_COLUMNS,
    TASK_COLUMNS,
    decode_spec,
    execution_view,
    task_view,
)
from fleetd.broker.scheduling import Gate, decode_scope
from fleetd.stores.postgres.database import Database, Tx
from shared.messages import UsageGroup
from shared.models import INT64_MAX, TaskSpec, TaskState, TaskView, UsageRow

CLAIM_COLUMNS = "id, spec, executions, resume_from, priority"
CLAIM_ORDER = f"SELECT {CLAIM_COLUMNS} FROM tasks WHERE state = 'queued' AND not_before <= ?"
GATED_PAGE = 200
# Claims under limits or holds count the running tasks, so two nodes must not count at once:
# they take this transaction-level advisory lock (claims without a gate need none).
GATED_CLAIM_LOCK = 0x666C656574 + 1

_TALLY = """
    SELECT e.id, coalesce(t.spec::json->>'agent', 'codex'), e.outcome, e.attempt,
           e.claimed_at, e.started_at, e.finished_at, t.enqueued_at,
           (e.result::json->'usage'->>'input_tokens')::bigint,
           (e.result::json->'usage'->>'cached_input_tokens')::bigint,
           (e.result::json->'usage'->>'output_tokens')::bigint,
           (e.result::json->'usage'->>'reasoning_output_tokens')::bigint,
           e.result::json->>'failure_class'
    FROM executions e JOIN tasks t ON t.id = e.task_id
"""


def first_fit(tx: Tx, now: int, gate: Gate | None) -> tuple | None:
    """The first due queued task in claim order (priority, then FIFO) that the gate lets
    start, locked for this transaction; rows other brokers hold locked are skipped."""
    if gate is None or gate.open:
        return tx.execute(
            CLAIM_ORDER + " ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED", (now,)
        ).fetchone()
    tx.execute("SELECT pg_advisory_xact_lock(?)", (GATED_CLAIM_LOCK,))
    rows = tx.execute("SELECT spec FROM tasks WHERE state = 'running'").fetchall()
    running = gate.counts(decode_scope(spec) for (spec,) in rows)
    closed = gate.closed(running)
    if closed.everything:
        return None
    where = "".join(
        f" AND {column} <> ALL(?)"
        for column, values in (("agent", closed.agents), ("repo", closed.repos))
        if values
    )
    args = [list(values) for values in (closed.agents, closed.repos) if values]
    after = ""
    after_args: list[int] = []
    while True:  # pages in claim order (keyset), read until a task fits
        page = tx.execute(
            CLAIM_ORDER + where + after + f" ORDER BY priority DESC, id LIMIT {GATED_PAGE}",
            (now, *args, *after_args),
        ).fetchall()
        for row in page:
            if gate.fits(decode_scope(row[1]), running):
                locked = tx.execute(
                    f"SELECT {CLAIM_COLUMNS} FROM tasks WHERE id = ? AND state = 'queued'"
                    " FOR UPDATE SKIP LOCKED",
                    (row[0],),
                ).fetchone()
                if locked is not None:
                    return locked
        if len(page) < GATED_PAGE:
            return None
        last = page[-1]
        after = " AND (priority < ? OR (priority = ? AND id > ?))"
        after_args = [last[4], last[4], last[0]]


def narrowing(narrow: dict[str, str | None]) -> list[tuple[str, list[object]]]:
    """list_tasks' filters over the spec, as fleetd/broker/task_filters.py has them for
    SQLite (a label's key may hold any character: it is a parameter, never a path)."""
    out: list[tuple[str, list[object]]] = []
    if narrow.get("agent"):
        out.append(("coalesce(spec::json->>'agent', 'codex') = ?", [narrow["agent"]]))
    if narrow.get("repo"):
        out.append(("spec::json->>'repo' = ?", [narrow["repo"]]))
    if narrow.get("label"):
        key, _, value = str(narrow["label"]).partition("=")
        out.append(("(spec::json->'labels')->>(?::text) = ?", [key, value]))
    if narrow.get("search"):
        out.append(("strpos(lower(spec::json->>'prompt'), lower(?::text)) > 0", [narrow["search"]]))
    return out


class PgReads:
    """The queue's reads (a part of `PgQueueStore`)."""

    db: Database
    node: str
    scan_window: int

    def store_started(self) -> None:
        raise NotImplementedError  # the store's

    def next_claimable_at(self, now: int = -1) -> int | None:
        due = self.db.run(
            lambda tx: tx.execute(
                "SELECT min(not_before) FROM tasks WHERE state = 'queued' AND not_before > ?",
                (now,),
            ).fetchone()[0]
        )
        return None if due is None or due >= INT64_MAX else due

    def counts(self) -> dict[str, int]:
        rows = self.db.run(
            lambda tx: tx.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall()
        )
        return {state: count for state, count in rows}

    def has_dependents(self, execution: int) -> bool:
        """Whether other tasks wait on this execution's task (its end may release them)."""
        row = self.db.run(
            lambda tx: tx.execute(
                "SELECT t.dependents FROM executions e JOIN tasks t ON t.id = e.task_id"
                " WHERE e.id = ?",
                (execution,),
            ).fetchone()
        )
        return bool(row and row[0])

    def running_of(self, worker: str) -> list[tuple[int, int, int]]:
        """(execution, task, claimed_at) of the running executions this node's worker holds."""
        return self.db.run(
            lambda tx: [
                tuple(row)
                for row in tx.execute(
                    "SELECT id, task_id, claimed_at FROM executions"
                    " WHERE node = ? AND worker = ? AND outcome = 'running'",
                    (self.node, worker),
                ).fetchall()
            ]
        )

    def get_task(self, task: int) -> TaskView | None:
        self.store_started()

        def read(tx: Tx) -> TaskView | None:
            row = tx.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task,)).fetchone()
            if row is None:
                return None
            rows = tx.execute(
                f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE task_id = ? ORDER BY id",
                (task,),
            ).fetchall()
            return msgspec.structs.replace(
                task_view(row), executions=[execution_view(r) for r in rows]
            )

        return self.db.run(read)

    def tasks_by_key(self, keys: list[str]) -> list[TaskView]:
        self.store_started()
        rows = self.db.run(
            lambda tx: tx.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE idempotency_key = ANY(?) ORDER BY id",
                (keys,),
            ).fetchall()
        )
        return [task_view(row) for row in rows]

    def list_tasks(
        self, state: TaskState | None, limit: int, before: int | None = None, **narrow: str | None
    ) -> list[TaskView]:
        return self.list_page(state, limit, before, **narrow)[0]

    def list_page(
        self, state: TaskState | None, limit: int, before: int | None = None, **narrow: str | None
    ) -> tuple[list[TaskView], int | None]:
        """As the SQLite store's: keyset pages, newest first; a filtered page looks at most
        `scan_window` ids below `before`."""
        self.store_started()

        def read(tx: Tx) -> tuple[list[TaskView], int]:
            top = before if before is not None else INT64_MAX
            where, args = ["id < ?"], [top]
            floor = 0
            if any(narrow.values()):
                if top == INT64_MAX:
                    top = (tx.execute("SELECT max(id) FROM tasks").fetchone()[0] or 0) + 1
                floor = max(0, top - self.scan_window)
                where.append("id >= ?")
                args.append(floor)
            if state is not None:
                where.append("state = ?")
                args.append(state)
            for clause, values in narrowing(narrow):
                where.append(clause)
                args.extend(values)  # type: ignore[arg-type]
            rows = tx.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE {' AND '.join(where)} "
                "ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
            return [task_view(row) for row in rows], floor

        tasks, floor = self.db.run(read)
        if len(tasks) == limit:
            return tasks, tasks[-1].id
        return tasks, floor if floor > 1 else None

    def running_spec(self, execution: int) -> TaskSpec | None:
        row = self.db.run(
            lambda tx: tx.execute(
                "SELECT t.spec FROM executions e JOIN tasks t ON t.id = e.task_id"
                " WHERE e.id = ? AND e.outcome = 'running'",
                (execution,),
            ).fetchone()
        )
        return decode_spec(row[0]) if row else None

    def running_specs(self) -> list[TaskSpec]:
        rows = self.db.run(
            lambda tx: tx.execute("SELECT spec FROM tasks WHERE state = 'running'").fetchall()
        )
        return [decode_spec(spec) for (spec,) in rows]

    def spend_since(self, since: int) -> list[Spend]:
        return self.db.run(lambda tx: sqlite_reads.spend_since(tx, since))  # type: ignore[arg-type]

    def usage(self, since: int, by: UsageGroup) -> list[UsageRow]:
        return self.db.run(lambda tx: sqlite_reads.usage(tx, since, by))  # type: ignore[arg-type]

    def tally_rows(self, after: int, running: list[int]) -> list[tuple]:
        def read(tx: Tx) -> list[tuple]:
            rows = tx.execute(_TALLY + " WHERE e.id > ?", (after,)).fetchall()
            if running:
                rows += tx.execute(_TALLY + " WHERE e.id = ANY(?)", (running,)).fetchall()
            return rows

        return self.db.run(read)

    def oldest_queued(self) -> int | None:
        return self.db.run(
            lambda tx: tx.execute(
                "SELECT min(enqueued_at) FROM tasks WHERE state = 'queued'"
            ).fetchone()[0]
        )
