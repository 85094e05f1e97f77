"""The counts per state that `status` reads are kept by triggers: they must always equal what
the tasks table holds, whatever sequence of enqueues, claims, finishes, losses, cancels and
retries happened, and a queue made before the counts existed gets them on open."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import apsw
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.broker.schema import MIGRATIONS
from fleetd.broker.store import QueueStore
from fleetd.runtime.db import migrate
from shared.models import ExecutionResult, TaskSpec

LEASE = 1_000
WORKERS = ("w1", "w2", "w3")
OUTCOMES = ("succeeded", "failed", "timed_out", "cancelled", "interrupted")

operation = st.one_of(
    st.tuples(st.just("enqueue"), st.integers(1, 4)),
    st.tuples(st.just("claim"), st.sampled_from(WORKERS)),
    st.tuples(st.just("finish"), st.sampled_from(OUTCOMES)),
    st.tuples(st.just("lose_worker"), st.sampled_from(WORKERS)),
    st.tuples(st.just("lose_expired"), st.just(0)),
    st.tuples(st.just("cancel"), st.integers(1, 12)),
    st.tuples(st.just("retry"), st.integers(1, 12)),
    st.tuples(st.just("delete"), st.integers(1, 12)),  # no fleetd code deletes tasks yet
)


def _counted(store: QueueStore) -> dict[str, int]:
    rows = store.conn.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
    return dict(rows)


def _apply(store: QueueStore, op: str, arg: int | str, now: int, running: list[int]) -> None:
    if op == "enqueue":
        store.enqueue([TaskSpec(prompt=f"p{now}-{i}") for i in range(int(arg))], now)
    elif op == "claim":
        claimed = store.claim(str(arg), now, LEASE)
        if claimed is not None:
            running.append(claimed.execution)
    elif op == "finish" and running:
        store.finish(running.pop(0), str(arg), ExecutionResult(), now)  # type: ignore[arg-type]
    elif op == "lose_worker":
        store.lose_worker(str(arg), "test", now)
    elif op == "lose_expired":
        store.lose_expired(now + 10 * LEASE)
    elif op == "cancel":
        store.cancel(int(arg), now)
    elif op == "retry":
        store.retry(int(arg), False, now)
    elif op == "delete":
        with store.conn:
            store.conn.execute("DELETE FROM executions WHERE task_id = ?", (arg,))
            store.conn.execute("DELETE FROM tasks WHERE id = ?", (arg,))


@settings(max_examples=60, deadline=None)
@given(st.lists(operation, max_size=40))
def test_counts_equal_the_tasks_table_after_any_operations(ops: list[tuple[str, object]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = QueueStore.open(Path(tmp) / "q.db", 2)
        try:
            running: list[int] = []
            for now, (op, arg) in enumerate(ops, start=1):
                _apply(store, op, arg, now * 100, running)  # type: ignore[arg-type]
                assert store.counts() == _counted(store), (op, arg)
        finally:
            store.close()


def test_a_queue_from_before_the_counts_gets_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    conn = apsw.Connection(str(path))
    migrate(conn, MIGRATIONS[:3])  # the schema as fleetd wrote it before the counts table
    for state in ("queued", "queued", "succeeded", "running"):
        conn.execute(
            "INSERT INTO tasks (state, spec, max_attempts, enqueued_at) VALUES (?, '{}', 3, 1)",
            (state,),
        )
    conn.close()
    store = QueueStore.open(path, 3)
    try:
        assert store.counts() == dict(Counter(["queued", "queued", "succeeded", "running"]))
        store.enqueue([TaskSpec(prompt="new")], 2)
        assert store.counts()["queued"] == 3
    finally:
        store.close()
