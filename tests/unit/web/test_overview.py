"""The overview's hour: finished tasks per minute and failures by class."""

from __future__ import annotations

from fleetd.web.overview import HOUR_US, describe, recent_rates
from shared.models import EventRecord, ExecutionResult, TaskSpec, TaskView

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


def line(payload: bytes, type_: str = "item.completed") -> EventRecord:
    return EventRecord(execution=1, seq=1, ts=0, type=type_, flags=0, payload=payload)


def test_latest_events_in_a_few_words() -> None:
    message = b'{"type":"item.completed","item":{"type":"agent_message","text":"all\\n done"}}'
    assert describe(line(message)) == "all done"
    command = b'{"item":{"type":"command_execution","command":"pytest -q","exit_code":1}}'
    assert describe(line(command)) == "$ pytest -q (exit 1)"
    started = b'{"item":{"type":"command_execution","command":"make"}}'
    assert describe(line(started)) == "$ make (running)"
    files = b'{"item":{"type":"file_change","changes":[{"path":"a.py","kind":"add"}]}}'
    assert describe(line(files)) == "files: a.py"
    assert describe(line(b'{"type":"turn.started"}', "turn.started")) == "turn.started"
    assert describe(line(b"plain \xff text", "text")) == "plain \ufffd text"
    assert len(describe(line(b"x" * 500, "text"))) == 160
