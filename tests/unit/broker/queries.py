"""Reads of the queue that only the tests need, made on the store's own connection (either
store: `sql(store).execute(...)` takes the SQLite store's `?` placeholders on both)."""

from __future__ import annotations

from typing import Any


class _Rows:
    def __init__(self, rows: list[tuple]) -> None:
        self.rows = rows

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple]:
        return self.rows

    def __iter__(self):
        return iter(self.rows)


class _PgSql:
    """One statement per transaction on the PostgreSQL store's connection."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def execute(self, query: str, args: Any = ()) -> _Rows:
        def run(tx: Any) -> list[tuple]:
            cursor = tx.execute(query, args)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

        return _Rows(self.store.db.run(run))


def sql(store: Any) -> Any:
    """Something with `execute(query, args)` on the store's database, whichever it is."""
    return store.conn if hasattr(store, "conn") else _PgSql(store)


def execution_holder(store: Any, execution: int) -> tuple[str, str | None] | None:
    """(outcome, worker) of an execution, or None."""
    row = (
        sql(store)
        .execute("SELECT outcome, worker FROM executions WHERE id = ?", (execution,))
        .fetchone()
    )
    return (row[0], row[1]) if row else None


def has_claimable(store: Any, now: int) -> bool:
    """Whether a queued task may be claimed at `now` (its retry backoff is over)."""
    row = (
        sql(store)
        .execute("SELECT 1 FROM tasks WHERE state = 'queued' AND not_before <= ? LIMIT 1", (now,))
        .fetchone()
    )
    return row is not None
