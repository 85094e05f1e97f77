"""The run counters of /metrics, from a queue on a temp file: each finished execution counted
once, whether it was settled long ago or ended after a still-running one."""

from __future__ import annotations

from fleetd.broker.store import QueueStore
from fleetd.broker.tally import RunTally
from shared.models import ExecutionResult, TaskSpec, TokenUsage

LEASE = 10_000_000


def run(store: QueueStore, outcome: str, now: int, **result: object) -> int:
    """Enqueue a task at `now`, claim it 2 ms later, start it, finish it 3 s later."""
    [(task, _)] = store.enqueue([TaskSpec(prompt="p", agent="command", argv=["x"])], now)
    claim = store.claim("w1", now + 2_000, LEASE)
    assert claim is not None and claim.task == task
    store.mark_started(claim.execution, now + 2_000, 1)
    store.finish(claim.execution, outcome, ExecutionResult(**result), now + 3_002_000, None, LEASE)
    return claim.execution


def test_counts_runs_tokens_failures_and_histograms(store: QueueStore) -> None:
    run(store, "succeeded", 1, usage=TokenUsage(input_tokens=10, output_tokens=4))
    run(store, "failed", 10_000_000, failure_class="permanent")
    totals = RunTally().totals(store)
    assert totals.runs == {"command": {"succeeded": 1, "failed": 1}}
    assert totals.tokens["command"] == {"input": 10, "output": 4}
    assert totals.failures == {"permanent": 1}
    durations = totals.durations["command"]
    assert sum(durations.counts) == 2
    assert durations.counts[durations.bounds.index(5.0)] == 2  # 3 s runs: in the (1, 5] bucket
    assert abs(durations.total - 6.0) < 1e-6
    assert sum(totals.dispatch.counts) == 2
    assert totals.queue_oldest_us is None


def test_a_run_that_ends_after_a_later_one_is_counted_once(store: QueueStore) -> None:
    tally = RunTally()
    store.enqueue([TaskSpec(prompt="slow", agent="command", argv=["x"])], 1)
    slow = store.claim("w1", 2, LEASE)
    assert slow is not None
    run(store, "succeeded", 100)
    first = tally.totals(store)
    assert first.runs == {"command": {"succeeded": 1}}
    assert tally.running == {slow.execution}  # read again next time, the rest never
    store.finish(slow.execution, "failed", ExecutionResult(), 5_000_000, None, LEASE)
    second = tally.totals(store)
    third = tally.totals(store)
    assert second.runs == third.runs == {"command": {"succeeded": 1, "failed": 1}}
    assert tally.running == set()


def test_a_new_tally_over_the_same_store_gives_the_same_counters(store: QueueStore) -> None:
    """What a restarted broker reports: computed from queue.db, not remembered."""
    for index in range(5):
        run(store, "succeeded" if index % 2 else "failed", index * 10_000_000)
    assert RunTally().totals(store) == RunTally().totals(store)


def test_the_oldest_queued_task_is_reported(store: QueueStore) -> None:
    store.enqueue([TaskSpec(prompt="a"), TaskSpec(prompt="b")], 42)
    assert RunTally().totals(store).queue_oldest_us == 42
