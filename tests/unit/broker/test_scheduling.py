"""The claim order against the store: priority, FIFO, not-before, dependencies, limits, holds."""

from __future__ import annotations

import pytest

from fleetd.broker.dependencies import UnknownDependency
from fleetd.broker.reads import CLAIM_ORDER
from fleetd.broker.scheduling import Gate, Hold, limits_of
from fleetd.broker.store import QueueStore
from shared.models import ExecutionResult, TaskSpec, TokenUsage
from shared.selectors import parse_selector
from tests.unit.broker.queries import sql

LEASE = 1_000


def add(store: QueueStore, now: int = 1, **fields) -> int:
    fields.setdefault("prompt", "p")
    [(task, _)] = store.enqueue([TaskSpec(**fields)], now)
    return task


def claimed(store: QueueStore, now: int = 10, gate: Gate | None = None) -> int | None:
    claim = store.claim("w", now, LEASE, gate)
    return claim.task if claim else None


def finish(store: QueueStore, task: int, outcome="succeeded", now: int = 20) -> None:
    [execution] = (
        sql(store)
        .execute("SELECT id FROM executions WHERE task_id = ? AND outcome = 'running'", (task,))
        .fetchone()
    )
    store.finish(execution, outcome, ExecutionResult(), now)


def state(store: QueueStore, task: int) -> str:
    view = store.get_task(task)
    assert view is not None
    return view.state


# --- priority ----------------------------------------------------------------------------------


def test_higher_priority_first_and_fifo_within_one(store: QueueStore) -> None:
    low = add(store, priority=-1)
    a = add(store)
    high = add(store, priority=5)
    b = add(store)
    assert [claimed(store) for _ in range(4)] == [high, a, b, low]


def test_set_priority_reorders_a_queued_task(store: QueueStore) -> None:
    first = add(store)
    second = add(store)
    assert store.set_priority(second, 3) == "queued"
    view = store.get_task(second)
    assert view is not None and view.priority == 3
    assert claimed(store) == second
    assert store.set_priority(second, 9) == "running"
    assert store.get_task(second).priority == 3  # a running task keeps its own
    assert claimed(store) == first
    assert store.set_priority(99, 1) is None


@pytest.mark.sqlite_only  # SQLite's query plan
def test_the_claim_uses_the_claim_index(store: QueueStore) -> None:
    plan = (
        sql(store)
        .execute(
            "EXPLAIN QUERY PLAN SELECT id, spec, executions, resume_from FROM tasks"
            " WHERE state = 'queued' AND not_before <= ? ORDER BY priority DESC, id",
            (0,),
        )
        .fetchall()
    )
    details = " ".join(str(row[-1]) for row in plan)
    assert "tasks_claim" in details and "TEMP B-TREE" not in details


# --- not before --------------------------------------------------------------------------------


def test_not_before_holds_a_task_until_its_time(store: QueueStore) -> None:
    later = add(store, not_before=100)
    now_task = add(store)
    assert claimed(store, now=50) == now_task
    assert claimed(store, now=50) is None
    assert store.next_claimable_at(50) == 100
    assert store.get_task(later).not_before == 100
    assert claimed(store, now=100) == later


# --- dependencies ------------------------------------------------------------------------------


def test_a_dependent_waits_until_its_dependency_succeeds(store: QueueStore) -> None:
    first = add(store)
    second = add(store, after=[first], priority=9)
    assert store.get_task(second).waiting == 1
    assert claimed(store) == first
    assert claimed(store) is None
    assert store.next_claimable_at(10) is None  # nothing comes due by itself
    finish(store, first)
    assert store.get_task(second).waiting == 0
    assert claimed(store, now=30) == second


def test_a_dependent_keeps_its_own_not_before(store: QueueStore) -> None:
    first = add(store)
    second = add(store, after=[first], not_before=500)
    claimed(store)
    finish(store, first)
    assert claimed(store, now=30) is None
    assert claimed(store, now=500) == second


@pytest.mark.parametrize("outcome", ["failed", "cancelled", "timed_out"])
def test_a_failed_dependency_cancels_its_dependents_with_the_reason(
    store: QueueStore, outcome: str
) -> None:
    first = add(store)
    second = add(store, after=[first])
    third = add(store, after=[second])
    claimed(store)
    finish(store, first, outcome)
    for task in (second, third):
        view = store.get_task(task)
        assert view.state == "cancelled"
        assert view.result is not None and "ended" in (view.result.reason or "")
    assert f"task {first}" in store.get_task(second).result.reason
    assert f"task {second}" in store.get_task(third).result.reason


def test_after_any_runs_whatever_the_outcome(store: QueueStore) -> None:
    first = add(store)
    second = add(store, after=[first], after_any=True)
    claimed(store)
    finish(store, first, "failed")
    assert claimed(store, now=30) == second


def test_cancelling_a_queued_dependency_cancels_its_dependent(store: QueueStore) -> None:
    first = add(store)
    second = add(store, after=[first])
    store.cancel(first, 5)
    assert state(store, second) == "cancelled"


def test_waiting_on_several_needs_all(store: QueueStore) -> None:
    a, b = add(store), add(store)
    c = add(store, after=[a, b, a])
    assert store.get_task(c).waiting == 2
    claimed(store), claimed(store)
    finish(store, a)
    assert claimed(store, now=30) is None
    finish(store, b)
    assert claimed(store, now=30) == c


def test_a_dependency_already_ended_counts_at_enqueue(store: QueueStore) -> None:
    done = add(store)
    claimed(store)
    finish(store, done)
    failed = add(store)
    claimed(store)
    finish(store, failed, "failed")
    assert claimed(store, now=30) is None
    ok = add(store, after=[done])
    assert claimed(store, now=30) == ok
    doomed = add(store, after=[failed])
    assert state(store, doomed) == "cancelled"


def test_an_unknown_dependency_is_refused_and_nothing_is_stored(store: QueueStore) -> None:
    add(store)
    with pytest.raises(UnknownDependency, match="no such task"):
        store.enqueue([TaskSpec(prompt="a"), TaskSpec(prompt="b", after=[7])], 2)
    assert store.counts() == {"queued": 1}


def test_a_task_cannot_wait_for_itself_or_a_later_one(store: QueueStore) -> None:
    # The next id would be 1: waiting for it (a cycle of one) is refused like any unknown id.
    with pytest.raises(UnknownDependency, match="cycle"):
        add(store, after=[1])


def test_dependencies_survive_reopening(tmp_path) -> None:
    path = tmp_path / "q.db"
    store = QueueStore.open(path, 3)
    first = add(store)
    second = add(store, after=[first])
    store.close()
    store = QueueStore.open(path, 3)
    try:
        assert claimed(store) == first
        assert claimed(store) is None
        finish(store, first)
        assert claimed(store, now=30) == second
    finally:
        store.close()


# --- limits and holds --------------------------------------------------------------------------


def test_a_full_limit_skips_its_tasks_without_blocking_the_rest(store: QueueStore) -> None:
    gate = Gate(limits_of({"agent:claude": 1}))
    c1 = add(store, agent="claude")
    c2 = add(store, agent="claude")
    x = add(store, agent="command", argv=["true"])
    assert claimed(store, gate=gate) == c1
    assert claimed(store, gate=gate) == x  # c2 is skipped, not waited for
    assert claimed(store, gate=gate) is None
    finish(store, c1)
    assert claimed(store, now=30, gate=gate) == c2


def test_a_task_matching_several_limits_needs_room_in_all(store: QueueStore) -> None:
    gate = Gate(limits_of({"agent:codex": 5, "label:team=web": 1}))
    web = add(store, labels={"team": "web"})
    web2 = add(store, labels={"team": "web"})
    other = add(store)
    assert [claimed(store, gate=gate) for _ in range(3)] == [web, other, None]
    finish(store, web)
    assert claimed(store, now=30, gate=gate) == web2


def test_a_hold_keeps_its_scope_from_starting(store: QueueStore) -> None:
    hold = Hold(parse_selector("agent:codex"), until=100, why="rate limited")
    gate = Gate(holds=(hold,))
    codex = add(store)
    other = add(store, agent="command", argv=["true"])
    assert claimed(store, gate=gate) == other
    assert claimed(store, gate=gate) is None
    assert claimed(store) == codex


def test_repo_selector_ignores_a_trailing_slash() -> None:
    selector = parse_selector("repo:/src/app/")
    assert selector.matches(TaskSpec(prompt="p", repo="/src/app"))
    assert not selector.matches(TaskSpec(prompt="p", repo="/src/app2"))


def test_a_key_enqueued_again_with_another_time_or_priority_is_the_same_task(
    store: QueueStore,
) -> None:
    [(task, created)] = store.enqueue([TaskSpec(prompt="p", key="k", not_before=100)], 1)
    again = TaskSpec(prompt="p", key="k", not_before=200, priority=3)  # `+10m` resolved anew
    assert store.enqueue([again], 2) == [(task, False)]
    assert created and store.get_task(task).priority == 0


def test_usage_groups_the_finished_executions(store: QueueStore) -> None:
    day = 86_400_000_000
    a = add(store, repo="/src/a", labels={"team": "web"})
    b = add(store, agent="claude")
    for task, tokens, cost, at in ((a, 100, 0.5, day), (b, 40, 0.25, 2 * day + 5)):
        claimed(store, now=at - 1)
        [execution] = (
            sql(store).execute("SELECT id FROM executions WHERE task_id = ?", (task,)).fetchone()
        )
        usage = TokenUsage(input_tokens=tokens, total_tokens=tokens)
        store.finish(execution, "succeeded", ExecutionResult(usage=usage, cost_usd=cost), at)
    by_day = {row.key: (row.tokens, row.cost_usd) for row in store.usage(0, "day")}
    assert by_day == {"1970-01-02": (100, 0.5), "1970-01-03": (40, 0.25)}
    assert [(r.key, r.tasks) for r in store.usage(0, "repo")] == [
        ("/src/a", 1),
        ("(no repository)", 1),
    ]
    assert [r.key for r in store.usage(2 * day, "agent")] == ["claude"]  # --since
    assert {r.key for r in store.usage(0, "label")} == {"team=web", "(no label)"}


@pytest.mark.sqlite_only  # SQLite's query plan
def test_a_held_agent_kind_is_left_out_by_the_query_itself(store: QueueStore) -> None:
    plan = (
        sql(store)
        .execute("EXPLAIN QUERY PLAN " + CLAIM_ORDER.format(" AND agent NOT IN (?)"), (0, "claude"))
        .fetchall()
    )
    details = " ".join(str(row[-1]) for row in plan)
    assert "tasks_claim" in details and "TEMP B-TREE" not in details
    gate = Gate(limits_of({"agent:claude": 0, "repo:/src/app": 0}))
    add(store, agent="claude")
    add(store, repo="/src/app/")
    other = add(store, repo="/src/other")
    assert gate.closed({}).agents == ("claude",) and gate.closed({}).repos == ("/src/app",)
    assert claimed(store, gate=gate) == other
    assert claimed(store, gate=Gate(holds=(Hold(parse_selector("*"), 99, "spent"),))) is None


def test_a_version_2_queue_gets_its_agent_and_repo_columns(tmp_path) -> None:
    from fleetd.broker.schema import MIGRATIONS
    from fleetd.runtime.db import open_database

    path = tmp_path / "q.db"
    old = open_database(path, MIGRATIONS[:2])
    for spec_json in ('{"prompt":"a"}', '{"prompt":"b","agent":"claude","repo":"/r/"}'):
        old.execute(
            "INSERT INTO tasks (state, spec, max_attempts, enqueued_at) VALUES ('queued', ?, 3, 1)",
            (spec_json,),
        )
    old.close()
    store = QueueStore.open(path, 3)
    try:
        rows = sql(store).execute("SELECT agent, repo FROM tasks ORDER BY id").fetchall()
        assert rows == [("codex", None), ("claude", "/r")]
        gate = Gate(limits_of({"agent:codex": 0}))
        assert claimed(store, gate=gate) == 2
    finally:
        store.close()
