"""Reads of `queue.db` for the control requests: counts, one task, a page of tasks, who
holds what, when the next queued task comes due (a part of `QueueStore`)."""

from __future__ import annotations

import apsw
import msgspec

from fleetd.broker.dependencies import WAITING
from fleetd.broker.rows import EXECUTION_COLUMNS, TASK_COLUMNS, execution_view, task_view
from fleetd.broker.task_filters import narrowing
from shared.models import INT64_MAX, TaskState, TaskView

# A filtered listing's page reads at most this many tasks' specs (~15 ms of the broker's loop).
SCAN_WINDOW = 10_000


class TaskReads:
    """What the broker answers reads from; `QueueStore` writes what these see."""

    conn: apsw.Connection
    scan_window: int

    def store_started(self) -> None:
        raise NotImplementedError  # the QueueStore's: start times it holds, written first

    def next_claimable_at(self, now: int = -1) -> int | None:
        """When the next queued task comes due after `now` (a retry's backoff, a `--not-before`);
        None if none will by itself (tasks waiting for others come due when those end)."""
        due = self.conn.execute(
            "SELECT MIN(not_before) FROM tasks WHERE state = 'queued' AND not_before > ?",
            (now,),
        ).fetchone()[0]
        return None if due is None or due >= WAITING else due

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT state, n FROM task_counts WHERE n > 0").fetchall()
        return {state: count for state, count in rows}

    def has_dependents(self, execution: int) -> bool:
        """Whether other tasks wait on this execution's task (its end may release them)."""
        row = self.conn.execute(
            "SELECT t.dependents FROM executions e JOIN tasks t ON t.id = e.task_id WHERE e.id = ?",
            (execution,),
        ).fetchone()
        return bool(row and row[0])

    def running_of(self, worker: str) -> list[tuple[int, int, int]]:
        """(execution, task, claimed_at) of the running executions a worker holds."""
        return self.conn.execute(
            "SELECT id, task_id, claimed_at FROM executions"
            " WHERE worker = ? AND outcome = 'running'",
            (worker,),
        ).fetchall()

    def get_task(self, task: int) -> TaskView | None:
        self.store_started()
        row = self.conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task,)
        ).fetchone()
        if row is None:
            return None
        rows = self.conn.execute(
            f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE task_id = ? ORDER BY id", (task,)
        ).fetchall()
        return msgspec.structs.replace(task_view(row), executions=[execution_view(r) for r in rows])

    def tasks_by_key(self, keys: list[str]) -> list[TaskView]:
        """The tasks enqueued with these idempotency keys, in id order."""
        self.store_started()
        found: list[TaskView] = []
        for start in range(0, len(keys), 500):  # under SQLite's limit on parameters
            chunk = keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            found += [
                task_view(row)
                for row in self.conn.execute(
                    f"SELECT {TASK_COLUMNS} FROM tasks WHERE idempotency_key IN ({marks})", chunk
                ).fetchall()
            ]
        return sorted(found, key=lambda task: task.id)

    def list_tasks(
        self, state: TaskState | None, limit: int, before: int | None = None, **narrow: str | None
    ) -> list[TaskView]:
        """Newest first; `narrow` by agent, repo, label (`key=value`) or search (prompt words)."""
        return self.list_page(state, limit, before, **narrow)[0]

    def list_page(
        self, state: TaskState | None, limit: int, before: int | None = None, **narrow: str | None
    ) -> tuple[list[TaskView], int | None]:
        """A page of list_tasks and the `before` of the next one (None: nothing older).

        A filter over the spec reads every task's JSON it passes, so one page looks at most
        `scan_window` ids below `before` (a rare word over 100,000 tasks took the broker 150 ms);
        fewer matches than `limit` then come with the id to go on from.
        """
        self.store_started()
        # Keyset paging (ids below `before`): page 2,000 costs what page 1 does.
        top = before if before is not None else INT64_MAX
        where, args = ["id < ?"], [top]
        floor = 0
        if any(narrow.values()):
            if top == INT64_MAX:
                top = (self.conn.execute("SELECT MAX(id) FROM tasks").fetchone()[0] or 0) + 1
            floor = max(0, top - self.scan_window)
            where.append("id >= ?")
            args.append(floor)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        for clause, values in narrowing(narrow):
            where.append(clause)
            args.extend(values)
        rows = self.conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE {' AND '.join(where)} "
            "ORDER BY id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        tasks = [task_view(row) for row in rows]
        if len(tasks) == limit:
            return tasks, tasks[-1].id
        return tasks, floor if floor > 1 else None
