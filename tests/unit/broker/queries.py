"""Reads of `queue.db` that only the tests need, made on the store's own connection."""

from __future__ import annotations

from fleetd.broker.store import QueueStore


def execution_holder(store: QueueStore, execution: int) -> tuple[str, str | None] | None:
    """(outcome, worker) of an execution, or None."""
    row = store.conn.execute(
        "SELECT outcome, worker FROM executions WHERE id = ?", (execution,)
    ).fetchone()
    return (row[0], row[1]) if row else None


def has_claimable(store: QueueStore, now: int) -> bool:
    """Whether a queued task may be claimed at `now` (its retry backoff is over)."""
    row = store.conn.execute(
        "SELECT 1 FROM tasks WHERE state = 'queued' AND not_before <= ? LIMIT 1", (now,)
    ).fetchone()
    return row is not None
