"""QueueStore retries: backoff and jitter, failure classes, `retry`, `--resume`, schema v2."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from fleetd.broker.dependencies import UnknownDependency
from fleetd.broker.policy import Backoff
from fleetd.broker.rows import Claim
from fleetd.broker.schema import MIGRATIONS
from fleetd.broker.store import QueueStore
from fleetd.runtime.db import open_database
from shared.models import ExecutionResult, ResumeFrom, TaskSpec, WorkspaceResult
from tests.unit.broker.queries import has_claimable

LEASE = 1_000
SECOND = 1_000_000
TRANSIENT = ExecutionResult(exit_code=1, failure_class="transient", reason="HTTP 500")


@pytest.fixture
def store(exact_backoff_store: QueueStore) -> QueueStore:
    return exact_backoff_store


def add(store: QueueStore, agent: str = "command", **fields) -> int:
    argv = ["true"] if agent == "command" else []
    spec = TaskSpec(prompt="p", agent=agent, argv=argv, **fields)  # type: ignore[arg-type]
    [(task, _)] = store.enqueue([spec], 1)
    return task


def claim(store: QueueStore, now: int, worker: str = "w1") -> Claim:
    claimed = store.claim(worker, now, LEASE)
    assert claimed is not None, f"nothing claimable at {now}"
    return claimed


def state(store: QueueStore, task: int) -> tuple[str, int, int | None]:
    view = store.get_task(task)
    assert view is not None
    return view.state, view.attempts, view.not_before


# --- backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(5.0, 300.0, rng=lambda: 1.0)
    waits = [backoff.delay_us(n) / SECOND for n in range(1, 9)]
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300]


@pytest.mark.parametrize(("draw", "wait"), [(0.0, 10.0), (0.5, 15.0), (1.0, 20.0)])
def test_backoff_equal_jitter_keeps_half_fixed(draw: float, wait: float) -> None:
    assert Backoff(5.0, 300.0, rng=lambda: draw).delay_us(3) == wait * SECOND


def test_backoff_of_huge_attempt_counts_is_the_cap() -> None:
    assert Backoff(5.0, 300.0, rng=lambda: 1.0).delay_us(100_000) == 300 * SECOND


def test_zero_backoff_retries_at_once() -> None:
    assert Backoff(0.0, 300.0).delay_us(4) == 0


# --- failure classes -----------------------------------------------------------------------


def test_transient_failure_requeues_after_the_backoff(store: QueueStore) -> None:
    task = add(store)
    failed_at = 10 * SECOND
    state_after, _ = store.finish(claim(store, 5).execution, "failed", TRANSIENT, failed_at)
    assert state_after == "queued"
    retry_at = failed_at + 5 * SECOND
    assert state(store, task) == ("queued", 1, retry_at)
    assert store.claim("w1", retry_at - 1, LEASE) is None
    assert has_claimable(store, retry_at - 1) is False
    again = claim(store, retry_at)
    assert (again.task, again.attempt) == (task, 2)
    assert state(store, task) == ("running", 2, None)


def test_second_transient_failure_waits_twice_as_long(store: QueueStore) -> None:
    task = add(store)
    store.finish(claim(store, 5).execution, "failed", TRANSIENT, 10)
    store.finish(claim(store, 10 + 5 * SECOND).execution, "failed", TRANSIENT, 20 * SECOND)
    assert state(store, task) == ("queued", 2, 30 * SECOND)


def test_transient_failure_at_max_attempts_fails(store: QueueStore) -> None:
    task = add(store, max_attempts=2)
    store.finish(claim(store, 5).execution, "failed", TRANSIENT, 10)
    state_after, _ = store.finish(claim(store, 6 * SECOND).execution, "failed", TRANSIENT, 7)
    assert state_after == "failed"
    view = store.get_task(task)
    assert view is not None and (view.state, view.attempts, view.not_before) == ("failed", 2, None)
    assert view.result is not None and view.result.failure_class == "transient"


@pytest.mark.parametrize("failure_class", ["permanent", "agent", None])
def test_other_failures_fail_at_once(store: QueueStore, failure_class) -> None:
    task = add(store)
    result = ExecutionResult(exit_code=1, failure_class=failure_class)
    state_after, _ = store.finish(claim(store, 5).execution, "failed", result, 10)
    assert state_after == "failed"
    assert state(store, task) == ("failed", 1, None)


def test_transient_failure_of_a_cancelled_task_is_not_retried(store: QueueStore) -> None:
    task = add(store)
    execution = claim(store, 5).execution
    store.cancel(task, 6)
    assert store.finish(execution, "failed", TRANSIENT, 10)[0] == "failed"


def test_worker_finishing_a_transient_failure_does_not_take_it_back_at_once(
    store: QueueStore,
) -> None:
    task = add(store)
    execution = claim(store, 5).execution
    state_after, next_claim = store.finish(execution, "failed", TRANSIENT, 10, "w1", LEASE)
    assert (state_after, next_claim) == ("queued", None)
    assert store.next_claimable_at() == 10 + 5 * SECOND
    assert state(store, task)[0] == "queued"


def test_zero_backoff_lets_the_same_worker_retry_at_once(tmp_path: Path) -> None:
    store = QueueStore.open(tmp_path / "q.db", 3, Backoff(0.0, 0.0))
    try:
        task = add(store)
        execution = claim(store, 5).execution
        _, next_claim = store.finish(execution, "failed", TRANSIENT, 10, "w1", LEASE)
        assert next_claim is not None and (next_claim.task, next_claim.attempt) == (task, 2)
    finally:
        store.close()


def test_lost_and_interrupted_runs_wait_no_backoff(store: QueueStore) -> None:
    task = add(store)
    store.finish(claim(store, 5).execution, "interrupted", ExecutionResult(), 10)
    assert state(store, task) == ("queued", 0, None)
    claim(store, 11)
    store.lose_worker("w1", "gone", 12)
    assert state(store, task) == ("queued", 1, None)
    assert claim(store, 13).task == task


def test_next_claimable_at(store: QueueStore) -> None:
    assert store.next_claimable_at() is None
    add(store)
    assert store.next_claimable_at() == 0


# --- retry -----------------------------------------------------------------------------------


def test_retry_of_a_failed_task_grants_one_more_attempt(store: QueueStore) -> None:
    task = add(store, max_attempts=1)
    store.finish(claim(store, 5).execution, "failed", ExecutionResult(exit_code=3), 10)
    retried = store.retry(task, False, 20)
    assert retried is not None and (retried.state, retried.resume, retried.refused) == (
        "queued",
        None,
        None,
    )
    view = store.get_task(task)
    assert view is not None
    assert (view.state, view.attempts, view.finished_at, view.result) == ("queued", 1, None, None)
    again = claim(store, 30)
    assert (again.task, again.attempt, again.resume) == (task, 2, None)
    # It may fail like any attempt; the grant was exactly one more.
    assert store.finish(again.execution, "failed", TRANSIENT, 40)[0] == "failed"


@pytest.mark.parametrize("end", ["succeeded", "cancelled", "timed_out"])
def test_retry_of_any_finished_task(store: QueueStore, end: str) -> None:
    task = add(store)
    store.finish(claim(store, 5).execution, end, ExecutionResult(), 10)
    assert store.retry(task, False, 20).state == "queued"  # type: ignore[union-attr]
    assert claim(store, 30).task == task


def test_retry_clears_a_cancel_request(store: QueueStore) -> None:
    task = add(store)
    execution = claim(store, 5).execution
    store.cancel(task, 6)
    store.finish(execution, "cancelled", ExecutionResult(), 10)
    store.retry(task, False, 20)
    execution = claim(store, 30).execution
    assert store.lose_execution(execution, "gone", 40)[0].task_state == "queued"


def test_retry_of_an_unfinished_task_is_refused(store: QueueStore) -> None:
    task = add(store)
    queued = store.retry(task, False, 2)
    assert queued is not None and queued.state is None
    assert queued.refused is not None and f"task {task} is already queued" in queued.refused
    claim(store, 5)
    running = store.retry(task, False, 6)
    assert running is not None and running.refused is not None
    assert "is running" in running.refused and f"fleetctl cancel {task}" in running.refused
    assert state(store, task) == ("running", 1, None)


def test_retry_of_an_unknown_task_is_none(store: QueueStore) -> None:
    assert store.retry(42, False, 1) is None


# --- retry --resume --------------------------------------------------------------------------


def codex_failed(store: QueueStore, now: int, **result) -> tuple[int, int]:
    claimed = claim(store, now)
    store.finish(claimed.execution, "failed", ExecutionResult(exit_code=1, **result), now + 1)
    return claimed.task, claimed.execution


def test_resume_carries_the_thread_and_workspace_to_the_next_claim(store: QueueStore) -> None:
    add(store, agent="codex")
    workspace = WorkspaceResult(path="/ws/task-1", branch="fleet/task-1", base="abc")
    task, execution = codex_failed(
        store, 5, thread_id="th-1", workspace=workspace, session_file="/codex/s.jsonl"
    )
    retried = store.retry(task, True, 20)
    expected = ResumeFrom(
        execution=execution,
        thread_id="th-1",
        workspace="/ws/task-1",
        session_file="/codex/s.jsonl",
    )
    assert retried is not None and retried.resume == expected
    assert claim(store, 30).resume == expected


def test_resume_takes_the_latest_attempt_that_started_a_thread(store: QueueStore) -> None:
    add(store, agent="codex", max_attempts=5)
    task, first = codex_failed(store, 5, thread_id="th-1")
    store.retry(task, False, 10)
    codex_failed(store, 20)  # no thread: it failed before Codex started one
    resumed = store.retry(task, True, 30)
    assert resumed is not None and resumed.resume is not None
    assert (resumed.resume.execution, resumed.resume.thread_id) == (first, "th-1")
    store.finish(claim(store, 40).execution, "failed", ExecutionResult(thread_id="th-3"), 41)
    latest = store.retry(task, True, 50)
    assert latest is not None and latest.resume is not None
    assert latest.resume.thread_id == "th-3"


def test_resume_survives_an_automatic_retry_and_plain_retry_clears_it(store: QueueStore) -> None:
    add(store, agent="codex", max_attempts=5)
    task, _ = codex_failed(store, 5, thread_id="th-1")
    store.retry(task, True, 10)
    first = claim(store, 20)
    store.finish(first.execution, "failed", TRANSIENT, 21)  # attempt 2: waits 10 s
    second = claim(store, 21 + 10 * SECOND)
    assert first.resume is not None and second.resume == first.resume
    store.finish(second.execution, "failed", ExecutionResult(exit_code=1), 22 + 10 * SECOND)
    store.retry(task, False, 30 * SECOND)
    assert claim(store, 31 * SECOND).resume is None


def test_resume_without_a_thread_is_refused(store: QueueStore) -> None:
    add(store, agent="codex")
    task, _ = codex_failed(store, 5)
    refused = store.retry(task, True, 20)
    assert refused is not None and refused.refused == (
        f"nothing to resume: no previous attempt of task {task} started a Codex thread;"
        " retry it without --resume"
    )
    assert state(store, task)[0] == "failed"


def test_resume_of_a_command_task_is_refused(store: QueueStore) -> None:
    add(store)
    task, _ = codex_failed(store, 5, thread_id="th-1")
    refused = store.retry(task, True, 20)
    assert refused is not None and refused.refused is not None
    assert "only codex and claude tasks" in refused.refused
    assert state(store, task)[0] == "failed"


# --- schema ----------------------------------------------------------------------------------


def test_a_version_1_database_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    old = open_database(path, MIGRATIONS[:1])
    old.execute(
        "INSERT INTO tasks (state, spec, max_attempts, enqueued_at)"
        ' VALUES (\'queued\', \'{"prompt":"old","agent":"command","argv":["true"]}\', 3, 7)'
    )
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    old.close()
    store = QueueStore.open(path, 3)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        columns = [row[1] for row in store.conn.execute("PRAGMA table_info(tasks)")]
        assert "resume_from" in columns
        claimed = claim(store, 10)
        assert (claimed.task, claimed.spec.prompt, claimed.resume) == (1, "old", None)
    finally:
        store.close()


def test_a_version_1_fleetd_refuses_the_upgraded_database(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    QueueStore.open(path, 3).close()
    with pytest.raises(apsw.Error, match="newer than this fleetd knows"):
        open_database(path, MIGRATIONS[:1])


# --- a task that continues another's thread (the tracker's follow-ups) -----------------------


def codex_done(store: QueueStore, now: int, **result) -> tuple[int, int]:
    claimed = claim(store, now)
    store.finish(claimed.execution, "succeeded", ExecutionResult(exit_code=0, **result), now + 1)
    return claimed.task, claimed.execution


def test_a_task_that_continues_another_resumes_that_tasks_latest_thread(
    store: QueueStore,
) -> None:
    first = add(store, agent="codex")
    _, execution = codex_done(store, 5, thread_id="th-1", session_file="/codex/s.jsonl")
    follow_up = add(store, agent="codex", continues=first)
    claimed = claim(store, 30)
    assert claimed.task == follow_up
    assert claimed.resume == ResumeFrom(
        execution=execution, thread_id="th-1", session_file="/codex/s.jsonl"
    )


def test_continuing_a_task_of_another_agent_or_with_no_thread_starts_fresh(
    store: QueueStore,
) -> None:
    first = add(store, agent="codex")
    codex_done(store, 5, thread_id="th-1")
    add(store, agent="claude", continues=first)
    assert claim(store, 30).resume is None
    no_thread = add(store, agent="codex")
    codex_done(store, 40)
    add(store, agent="codex", continues=no_thread)
    assert claim(store, 60).resume is None


def test_continuing_a_task_that_does_not_exist_is_refused(store: QueueStore) -> None:
    with pytest.raises(UnknownDependency, match="continues 9: no such task"):
        add(store, agent="codex", continues=9)
    assert store.list_tasks(None, 10) == []
