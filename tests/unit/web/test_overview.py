"""The overview's hour: finished tasks per minute and failures by class."""

from __future__ import annotations

from fleetd.web.overview import HOUR_US, recent_rates
from shared.models import ExecutionResult, TaskSpec, TaskView

NOW = 10 * HOUR_US


def task(state: str, finished_ago: int | None, failure_class: str | None = None) -> TaskView:
    return TaskView(
        id=1,
        state=state,  # type: ignore[arg-type]
        spec=TaskSpec(prompt="p"),
        attempts=1,
        enqueued_at=0,
        finished_at=None if finished_ago is None else NOW - finished_ago,
        result=ExecutionResult(failure_class=failure_class),  # type: ignore[arg-type]
    )


def test_only_the_last_hour_counts_and_failures_go_by_class() -> None:
    tasks = [
        task("succeeded", 60_000_000),
        task("failed", 120_000_000, "agent"),
        task("timed_out", 10),
        task("failed", 2 * HOUR_US, "permanent"),  # over an hour ago
        task("running", None),
    ]
    rates = recent_rates(tasks, NOW)
    assert rates.finished == 3
    assert rates.per_minute == 0.05
    assert rates.failures == {"agent": 1, "timed_out": 1}
