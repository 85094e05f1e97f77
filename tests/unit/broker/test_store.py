"""QueueStore on a temp file: claims, leases, finishes, losses, cancels, and the schema."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from fleetd.broker.rows import Claim, Closed
from fleetd.broker.schema import MIGRATIONS
from fleetd.broker.store import KeyConflict, QueueStore
from fleetd.stores.protocol import QueueStoreAPI
from shared.models import ExecutionResult, TaskSpec
from tests.unit.broker.queries import execution_holder, sql

LEASE = 1_000


def spec(prompt: str = "p", **fields) -> TaskSpec:
    return TaskSpec(prompt=prompt, **fields)


def add(store: QueueStore, *prompts: str, now: int = 1) -> list[int]:
    return [task for task, _ in store.enqueue([spec(p) for p in prompts], now)]


def claim(store: QueueStore, worker: str = "w1", now: int = 10) -> Claim:
    claimed = store.claim(worker, now, LEASE)
    assert claimed is not None
    return claimed


# --- enqueue and claim ------------------------------------------------------------------------


def test_enqueue_returns_new_ids_in_order(store: QueueStore) -> None:
    assert store.enqueue([spec("a"), spec("b")], 5) == [(1, True), (2, True)]


def test_enqueued_task_is_queued_with_its_spec(store: QueueStore) -> None:
    task_spec = spec("a", labels={"team": "x"}, timeout=3.0)
    [(task, _)] = store.enqueue([task_spec], 5)
    view = store.get_task(task)
    assert view is not None
    assert (view.state, view.spec, view.attempts, view.enqueued_at) == ("queued", task_spec, 0, 5)
    assert view.started_at is None and view.finished_at is None and view.executions == []


def test_claims_are_fifo(store: QueueStore) -> None:
    first, second, third = add(store, "a", "b", "c")
    assert [claim(store, w).task for w in ("w1", "w2", "w3")] == [first, second, third]


def test_claim_on_empty_queue_is_none(store: QueueStore) -> None:
    assert store.claim("w1", 10, LEASE) is None


def test_claim_when_every_task_runs_is_none(store: QueueStore) -> None:
    add(store, "a")
    claim(store)
    assert store.claim("w2", 11, LEASE) is None


def test_claim_takes_a_lease_and_starts_the_task(store: QueueStore) -> None:
    [task] = add(store, "a")
    claimed = store.claim("w1", 10, LEASE)
    assert claimed == Claim(
        task=task, execution=1, attempt=1, spec=spec("a"), lease_expires_at=1010
    )
    view = store.get_task(task)
    assert view is not None
    assert (view.state, view.attempts, view.started_at) == ("running", 1, 10)
    assert execution_holder(store, 1) == ("running", "w1")


def test_idempotency_key_returns_the_same_task(store: QueueStore) -> None:
    [(first, created)] = store.enqueue([spec("a", key="k")], 1)
    assert created is True
    assert store.enqueue([spec("a", key="k")], 2) == [(first, False)]
    assert store.counts() == {"queued": 1}


def test_idempotency_key_with_another_spec_is_a_conflict_and_stores_nothing(
    store: QueueStore,
) -> None:
    [(first, _)] = store.enqueue([spec("a", key="k")], 1)
    with pytest.raises(KeyConflict, match=f"task {first}"):
        store.enqueue([spec("b"), spec("changed", key="k")], 2)
    view = store.get_task(first)
    assert view is not None and view.spec.prompt == "a"
    assert store.counts() == {"queued": 1}  # not "b" either: the batch is all or nothing


def test_idempotency_key_within_one_batch(store: QueueStore) -> None:
    result = store.enqueue([spec("a", key="k"), spec("b"), spec("a", key="k")], 1)
    assert result == [(1, True), (2, True), (1, False)]
    assert store.counts() == {"queued": 2}


def test_a_stored_spec_out_of_todays_bounds_still_reads(store: QueueStore) -> None:
    sql(store).execute(
        "INSERT INTO tasks (state, spec, max_attempts, enqueued_at) VALUES ('queued', ?, 3, 1)",
        ('{"prompt":"nul","agent":"command","argv":["echo","a\\u0000b"]}',),
    )
    [view] = store.list_tasks(None, 10)
    assert view.spec.agent == "command" and view.spec.argv == []
    assert "no longer valid" in view.spec.prompt
    found = claim(store)
    assert found.spec.argv == []  # the worker fails this attempt: "needs its argv"


def test_idempotency_key_matches_a_finished_task(store: QueueStore) -> None:
    [(task, _)] = store.enqueue([spec("a", key="k")], 1)
    store.finish(claim(store).execution, "succeeded", ExecutionResult(), 20)
    assert store.enqueue([spec("a", key="k")], 30) == [(task, False)]


def test_tasks_without_key_are_never_merged(store: QueueStore) -> None:
    assert store.enqueue([spec("a"), spec("a")], 1) == [(1, True), (2, True)]


# --- finish ---------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "cancelled", "timed_out"])
def test_finish_sets_the_task_state_and_finished_at(store: QueueStore, outcome: str) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    result = ExecutionResult(exit_code=0, final_message="ok")
    state, next_claim = store.finish(execution, outcome, result, 50)
    assert (state, next_claim) == (outcome, None)
    view = store.get_task(task)
    assert view is not None
    assert (view.state, view.finished_at, view.result) == (outcome, 50, result)
    assert execution_holder(store, execution) == (outcome, "w1")


def test_failed_run_is_not_retried(store: QueueStore) -> None:
    [task] = add(store, "a")
    store.finish(claim(store).execution, "failed", ExecutionResult(exit_code=1), 50)
    assert store.claim("w1", 60, LEASE) is None
    view = store.get_task(task)
    assert view is not None and view.state == "failed"


def test_interrupted_requeues_without_spending_an_attempt(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    state, _ = store.finish(execution, "interrupted", ExecutionResult(), 50)
    assert state == "queued"
    view = store.get_task(task)
    assert view is not None
    assert (view.state, view.attempts, view.finished_at) == ("queued", 0, None)
    assert execution_holder(store, execution) == ("interrupted", "w1")


def test_interrupted_task_is_claimed_again_as_a_new_execution(store: QueueStore) -> None:
    [task] = add(store, "a")
    store.finish(claim(store).execution, "interrupted", ExecutionResult(), 50)
    again = claim(store, "w2", 60)
    assert (again.task, again.execution, again.attempt) == (task, 2, 2)
    view = store.get_task(task)
    assert view is not None and view.attempts == 1


def test_interrupts_never_exhaust_the_attempts(store: QueueStore) -> None:
    [task] = add(store, "a")
    for now in range(10, 60, 10):
        store.finish(claim(store, now=now).execution, "interrupted", ExecutionResult(), now + 1)
    view = store.get_task(task)
    assert view is not None and (view.state, view.attempts) == ("queued", 0)


def test_resent_finish_returns_none_and_changes_nothing(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    store.finish(execution, "succeeded", ExecutionResult(exit_code=0), 50)
    assert store.finish(execution, "failed", ExecutionResult(exit_code=1), 60) == (None, None)
    view = store.get_task(task)
    assert view is not None
    assert (view.state, view.finished_at, view.result) == (
        "succeeded",
        50,
        ExecutionResult(exit_code=0),
    )


def test_finish_of_unknown_execution_returns_none(store: QueueStore) -> None:
    assert store.finish(99, "succeeded", ExecutionResult(), 50) == (None, None)


def test_finish_with_claim_for_claims_the_next_task(store: QueueStore) -> None:
    first, second = add(store, "a", "b")
    execution = claim(store).execution
    state, next_claim = store.finish(
        execution, "succeeded", ExecutionResult(), 50, claim_for="w1", lease_us=LEASE
    )
    assert state == "succeeded"
    assert next_claim == Claim(
        task=second, execution=2, attempt=1, spec=spec("b"), lease_expires_at=1050
    )
    assert store.running_of("w1") == [(2, second, 50)]
    view = store.get_task(first)
    assert view is not None and view.state == "succeeded"


def test_finish_with_claim_for_on_empty_queue_claims_nothing(store: QueueStore) -> None:
    add(store, "a")
    execution = claim(store).execution
    state, next_claim = store.finish(execution, "succeeded", ExecutionResult(), 50, "w1", LEASE)
    assert (state, next_claim) == ("succeeded", None)


def test_interrupted_finish_with_claim_for_reclaims_the_same_task(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    state, next_claim = store.finish(execution, "interrupted", ExecutionResult(), 50, "w2", LEASE)
    assert state == "queued"
    assert next_claim is not None and (next_claim.task, next_claim.attempt) == (task, 2)


# --- leases and losses ------------------------------------------------------------------------


def test_renew_by_the_holder_extends_the_lease(store: QueueStore) -> None:
    add(store, "a")
    execution = claim(store, now=10).execution  # lease until 1010
    assert store.renew(execution, "w1", 900, LEASE) is True  # now until 1900
    assert store.lose_expired(1500) == []
    assert execution_holder(store, execution) == ("running", "w1")


def test_renew_by_another_worker_fails_and_keeps_the_lease(store: QueueStore) -> None:
    add(store, "a")
    execution = claim(store, now=10).execution
    assert store.renew(execution, "w2", 900, LEASE) is False
    assert [c.execution for c in store.lose_expired(1011)] == [execution]


def test_renew_of_a_finished_execution_fails(store: QueueStore) -> None:
    add(store, "a")
    execution = claim(store).execution
    store.finish(execution, "succeeded", ExecutionResult(), 50)
    assert store.renew(execution, "w1", 60, LEASE) is False


def test_lease_expires_only_after_its_deadline(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store, now=10).execution
    assert store.lose_expired(1010) == []
    assert store.lose_expired(1011) == [Closed(task, execution, "w1", "queued")]


def test_lost_execution_requeues_and_spends_an_attempt(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    assert store.lose_worker("w1", "worker died", 50) == [Closed(task, execution, "w1", "queued")]
    view = store.get_task(task)
    assert view is not None
    assert (view.state, view.attempts, view.finished_at) == ("queued", 1, None)
    [lost] = view.executions
    assert (lost.outcome, lost.finished_at) == ("lost", 50)
    assert lost.result == ExecutionResult(error="lost", reason="worker died")


def test_lose_worker_fails_the_task_at_max_attempts(store: QueueStore) -> None:
    [task] = add(store, "a")
    states = []
    for now in (10, 20, 30):
        claim(store, now=now)
        states += [c.task_state for c in store.lose_worker("w1", "died", now + 1)]
    assert states == ["queued", "queued", "failed"]
    view = store.get_task(task)
    assert view is not None
    assert (view.state, view.attempts, view.finished_at) == ("failed", 3, 31)
    assert view.result == ExecutionResult(error="lost", reason="died")
    assert store.claim("w1", 40, LEASE) is None


def test_task_max_attempts_overrides_the_default(store: QueueStore) -> None:
    [(task, _)] = store.enqueue([spec("a", max_attempts=1)], 1)
    claim(store)
    assert store.lose_worker("w1", "died", 20) == [Closed(task, 1, "w1", "failed")]


def test_lose_expired_fails_the_task_at_max_attempts(store: QueueStore) -> None:
    [(task, _)] = store.enqueue([spec("a", max_attempts=2)], 1)
    claim(store, now=10)
    assert store.lose_expired(2000)[0].task_state == "queued"
    claim(store, now=3000)
    assert store.lose_expired(5000) == [Closed(task, 2, "w1", "failed")]


def test_lose_worker_only_touches_that_worker(store: QueueStore) -> None:
    first, second = add(store, "a", "b")
    claim(store, "w1")
    claim(store, "w2")
    assert [c.task for c in store.lose_worker("w2", "died", 50)] == [second]
    assert store.running_of("w1") == [(1, first, 10)]


def test_lose_all_running_closes_every_worker_execution(store: QueueStore) -> None:
    first, second, _ = add(store, "a", "b", "c")
    claim(store, "w1")
    claim(store, "w2")
    closed = store.lose_all_running("fleetd restarted", 50)
    assert sorted((c.task, c.worker, c.task_state) for c in closed) == [
        (first, "w1", "queued"),
        (second, "w2", "queued"),
    ]
    assert store.counts() == {"queued": 3}


def test_lose_all_running_fails_tasks_at_max_attempts(store: QueueStore) -> None:
    store.enqueue([spec("a", max_attempts=1)], 1)
    claim(store)
    assert [c.task_state for c in store.lose_all_running("restart", 50)] == ["failed"]
    assert store.counts() == {"failed": 1}


def test_lose_execution_closes_just_that_execution(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    assert store.lose_execution(execution, "never arrived", 50) == [
        Closed(task, execution, "w1", "queued")
    ]
    assert store.lose_execution(execution, "again", 60) == []


def test_finish_after_loss_is_ignored(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    store.lose_worker("w1", "died", 50)
    assert store.finish(execution, "succeeded", ExecutionResult(), 60) == (None, None)
    view = store.get_task(task)
    assert view is not None and (view.state, view.attempts) == ("queued", 1)


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_queued_task_is_immediate(store: QueueStore) -> None:
    [task] = add(store, "a")
    assert store.cancel(task, 50) == ("cancelled", None, None)
    view = store.get_task(task)
    assert view is not None and (view.state, view.finished_at) == ("cancelled", 50)
    assert store.claim("w1", 60, LEASE) is None


def test_cancel_running_task_returns_its_execution_and_worker(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    assert store.cancel(task, 50) == ("running", execution, "w1")
    view = store.get_task(task)
    assert view is not None and view.state == "running"


def test_cancelled_run_ends_the_task_cancelled(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    store.cancel(task, 50)
    assert store.finish(execution, "cancelled", ExecutionResult(), 60) == ("cancelled", None)


def test_cancel_requested_task_is_not_requeued_when_lost(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    store.cancel(task, 50)
    assert store.lose_worker("w1", "died", 60) == [Closed(task, execution, "w1", "cancelled")]
    assert store.counts() == {"cancelled": 1}


def test_cancel_requested_task_is_not_requeued_when_interrupted(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    store.cancel(task, 50)
    assert store.finish(execution, "interrupted", ExecutionResult(), 60) == ("cancelled", None)


def test_cancel_finished_task_reports_its_state(store: QueueStore) -> None:
    [task] = add(store, "a")
    store.finish(claim(store).execution, "succeeded", ExecutionResult(), 50)
    assert store.cancel(task, 60) == ("succeeded", None, None)
    view = store.get_task(task)
    assert view is not None and (view.state, view.finished_at) == ("succeeded", 50)


def test_cancel_unknown_task_is_none(store: QueueStore) -> None:
    assert store.cancel(42, 50) is None


# --- reads ----------------------------------------------------------------------------------


def test_counts_per_state(store: QueueStore) -> None:
    first, _, _, fourth = add(store, "a", "b", "c", "d")
    execution = claim(store).execution
    store.finish(execution, "succeeded", ExecutionResult(), 50)
    claim(store, "w2")
    store.cancel(fourth, 60)
    assert store.counts() == {"succeeded": 1, "running": 1, "queued": 1, "cancelled": 1}
    view = store.get_task(first)
    assert view is not None and view.state == "succeeded"


def test_counts_of_empty_queue(store: QueueStore) -> None:
    assert store.counts() == {}


def test_get_task_lists_every_execution_in_order(store: QueueStore) -> None:
    [task] = add(store, "a")
    claim(store, "w1", 10)
    store.lose_worker("w1", "died", 20)
    second = claim(store, "w2", 30).execution
    store.mark_started(second, 31, 4242)
    store.finish(second, "succeeded", ExecutionResult(exit_code=0, events=3), 40)
    view = store.get_task(task)
    assert view is not None
    summary = [
        (e.id, e.attempt, e.worker, e.outcome, e.claimed_at, e.started_at, e.finished_at)
        for e in view.executions
    ]
    assert summary == [
        (1, 1, "w1", "lost", 10, None, 20),
        (2, 2, "w2", "succeeded", 30, 31, 40),
    ]
    assert view.executions[1].result == ExecutionResult(exit_code=0, events=3)
    assert (view.state, view.attempts, view.started_at, view.finished_at) == (
        "succeeded",
        2,
        10,
        40,
    )


def test_get_task_of_unknown_task_is_none(store: QueueStore) -> None:
    assert store.get_task(7) is None


def test_list_tasks_newest_first_with_state_and_limit(store: QueueStore) -> None:
    add(store, "a", "b", "c")
    claim(store)
    assert [t.id for t in store.list_tasks(None, 10)] == [3, 2, 1]
    assert [t.id for t in store.list_tasks(None, 2)] == [3, 2]
    assert [t.id for t in store.list_tasks("queued", 10)] == [3, 2]
    assert [t.id for t in store.list_tasks("running", 10)] == [1]


@pytest.mark.sqlite_only  # counts SQLite's changes
def test_a_start_is_written_with_the_next_transaction_not_one_of_its_own(
    store: QueueStore,
) -> None:
    """AgentStarted then Finished, as a short run sends them: one commit for both."""
    add(store, "a")
    execution = claim(store).execution
    written = store.conn.total_changes()
    store.mark_started(execution, 15, 99)
    assert store.conn.total_changes() == written  # nothing written yet
    store.finish(execution, "succeeded", ExecutionResult(exit_code=0), 20)
    row = (
        sql(store)
        .execute("SELECT started_at, agent_pid FROM executions WHERE id = ?", (execution,))
        .fetchone()
    )
    assert row == (15, 99)


def test_a_read_sees_a_start_not_written_yet(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    store.mark_started(execution, 15, 99)
    view = store.get_task(task)
    assert view is not None and view.executions[0].started_at == 15


def test_mark_started_ignores_a_closed_execution(store: QueueStore) -> None:
    [task] = add(store, "a")
    execution = claim(store).execution
    store.finish(execution, "failed", ExecutionResult(), 20)
    store.mark_started(execution, 15, 99)
    view = store.get_task(task)
    assert view is not None and view.executions[0].started_at is None


# --- the file -------------------------------------------------------------------------------


def test_reopened_file_keeps_tasks_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    first = QueueStore.open(path, 3)
    first.enqueue([spec("a"), spec("b")], 1)
    first.finish(claim(first).execution, "succeeded", ExecutionResult(), 20)
    first.close()
    again = QueueStore.open(path, 3)
    try:
        assert again.counts() == {"succeeded": 1, "queued": 1}
        conn = again.conn
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        again.close()


def test_separate_connection_sees_committed_state(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = QueueStore.open(path, 3)
    try:
        store.enqueue([spec("a")], 1)
        claim(store)
        reader = apsw.Connection(str(path))
        rows = reader.execute("SELECT state, attempts FROM tasks").fetchall()
        reader.close()
        assert rows == [("running", 1)]
    finally:
        store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    QueueStore.open(path, 3).close()
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(apsw.Error, match="newer than this fleetd knows"):
        QueueStore.open(path, 3)


def test_a_filtered_listing_reads_a_bounded_window_and_says_where_to_go_on(
    store: QueueStore,
) -> None:
    store.scan_window = 100
    prompts = [f"needle {i}" if i in (5, 150, 290) else f"hay {i}" for i in range(1, 301)]
    store.enqueue([spec(p) for p in prompts], 1)
    tasks, next_before = store.list_page(None, 10, search="needle")
    assert [t.id for t in tasks] == [290] and next_before == 201  # ids 201-300 looked at
    found, before = [t.id for t in tasks], next_before
    while before is not None:
        tasks, before = store.list_page(None, 10, before, search="needle")
        found += [t.id for t in tasks]
    assert found == [290, 150, 5]
    # An unfiltered page is not windowed; a full page goes on from its last task.
    tasks, next_before = store.list_page(None, 3)
    assert [t.id for t in tasks] == [300, 299, 298] and next_before == 298
    assert store.list_page(None, 3, 2)[1] is None


def test_the_store_is_the_seams_store_and_its_lease_token_fences(
    store: QueueStore,
) -> None:
    assert isinstance(store, QueueStoreAPI)
    store.enqueue([TaskSpec(prompt="fenced")], 1)
    claim = store.claim("w1", 10, 1_000_000)
    assert claim is not None and claim.lease > 0
    stale = claim.lease + 1
    assert not store.renew(claim.execution, "w1", 20, 1_000_000, lease=stale)
    assert store.renew(claim.execution, "w1", 20, 1_000_000, lease=claim.lease)
    result = ExecutionResult(exit_code=0)
    assert store.finish(claim.execution, "succeeded", result, 30, lease=stale) == (None, None)
    assert store.get_task(claim.task).state == "running"
    assert store.finish(claim.execution, "succeeded", result, 30, lease=claim.lease)[0] == (
        "succeeded"
    )
