"""`fleetctl show` in words: failure classes, retries, timeouts, run summaries, workspaces."""

from __future__ import annotations

import datetime as dt

from fleetctl import show
from shared.models import (
    DiffSummary,
    ExecutionResult,
    ExecutionView,
    FileChange,
    TaskSpec,
    TaskView,
    TokenUsage,
    WorkspaceResult,
)

# 2026-11-25 20:31:05 UTC in microseconds.
AT = int(dt.datetime(2026, 11, 25, 20, 31, 5, tzinfo=dt.UTC).timestamp()) * 1_000_000
TRANSIENT = ExecutionResult(
    exit_code=1,
    failure_class="transient",
    reason="HTTP 500 Internal Server Error from the model provider",
    error="unexpected status 500 Internal Server Error: boom",
    duration_s=0.25,
)


def execution(id: int, outcome: str, result: ExecutionResult | None) -> ExecutionView:
    return ExecutionView(
        id=id, attempt=id, worker="w1", outcome=outcome, claimed_at=AT, result=result
    )  # type: ignore[arg-type]


def task(state: str, *executions: ExecutionView, **fields) -> TaskView:
    return TaskView(
        id=3,
        state=state,  # type: ignore[arg-type]
        spec=TaskSpec(prompt="fix it"),
        attempts=len(executions),
        enqueued_at=AT,
        executions=list(executions),
        **fields,
    )


def test_waiting_retry_is_shown_on_the_task_and_its_last_execution() -> None:
    view = task("queued", execution(1, "failed", TRANSIENT), not_before=AT)
    assert show.task_state_words(view) == "queued (retry at 20:31:05 UTC)"
    lines = show.execution_lines(view)
    assert lines[1] == (
        "execution 1 (run 1 on w1): failed (transient: HTTP 500 Internal Server Error"
        " from the model provider; retrying at 20:31:05 UTC)"
    )
    assert "  exit:           status 1" in lines
    assert "  error:          unexpected status 500 Internal Server Error: boom" in lines


def test_failed_task_says_its_class_and_reason() -> None:
    result = ExecutionResult(
        exit_code=1, failure_class="permanent", reason="HTTP 401: check the key"
    )
    view = task("failed", execution(1, "failed", result), result=result)
    assert show.task_state_words(view) == "failed (permanent: HTTP 401: check the key)"
    assert "retrying" not in "\n".join(show.execution_lines(view))


def test_transient_failure_out_of_attempts_says_how_to_retry() -> None:
    view = task("failed", execution(1, "failed", TRANSIENT), result=TRANSIENT)
    assert show.task_state_words(view) == (
        "failed (transient: HTTP 500 Internal Server Error from the model provider);"
        " out of attempts: `fleetctl retry 3` tries again"
    )


def test_earlier_executions_are_not_marked_as_retrying() -> None:
    view = task(
        "queued", execution(1, "failed", TRANSIENT), execution(2, "lost", None), not_before=AT
    )
    first, second = (line for line in show.execution_lines(view) if line.startswith("execution"))
    assert "retrying" not in first
    assert second == "execution 2 (run 2 on w1): lost"


def test_timeout_kind_and_signal() -> None:
    result = ExecutionResult(signal=15, timeout_kind="idle", reason="no output for 900 s")
    lines = show.execution_lines(task("timed_out", execution(1, "timed_out", result)))
    assert lines[1].endswith("timed out (no output for 900 s)")
    assert "  exit:           signal 15" in lines
    assert "  timeout:        no output for too long" in lines


def test_run_summary_lines() -> None:
    result = ExecutionResult(
        exit_code=0,
        final_message="Done: created hello.txt",
        usage=TokenUsage(
            input_tokens=120, cached_input_tokens=20, output_tokens=30, total_tokens=150
        ),
        duration_s=1.5,
        commands=3,
        failed_commands=1,
    )
    lines = show.execution_lines(task("succeeded", execution(1, "succeeded", result)))
    assert lines[1] == "execution 1 (run 1 on w1): succeeded"
    assert lines[2:] == [
        "  exit:           status 0",
        "  duration:       1.500 s",
        "  commands:       3 run, 1 failed",
        "  tokens:         120 in (20 cached), 30 out, 150 total",
        "  final message:  Done: created hello.txt",
    ]


def test_workspace_branch_commit_and_files() -> None:
    workspace = WorkspaceResult(
        path="/state/workspaces/3",
        branch="fleet/task-3",
        base="0" * 40,
        commit="abcdef0123456789",
        diff=DiffSummary(
            files=[
                FileChange(path="src/a.py", insertions=3, deletions=1),
                FileChange(path="logo.png", insertions=None, deletions=None),
            ],
            insertions=3,
            deletions=1,
        ),
    )
    result = ExecutionResult(exit_code=0, workspace=workspace)
    lines = show.execution_lines(task("succeeded", execution(1, "succeeded", result)))
    assert lines[-5:] == [
        "  branch:         fleet/task-3 at abcdef0123",
        "  worktree:       /state/workspaces/3",
        "  files:          src/a.py +3 -1",
        "                  logo.png (binary)",
        "                  2 files changed, +3 -1",
    ]


def test_runs_interrupted_by_a_stop_are_runs_not_attempts() -> None:
    """An execution's number counts runs; a run a stop interrupted spends no attempt, so
    `show` calls the one a run and says how many runs the attempts leave out."""
    interrupted = ExecutionView(id=4, attempt=1, worker="w1", outcome="interrupted", claimed_at=AT)
    failed = ExecutionView(
        id=5, attempt=2, worker="w2", outcome="failed", claimed_at=AT, result=TRANSIENT
    )
    view = TaskView(
        id=3,
        state="failed",
        spec=TaskSpec(prompt="fix it"),
        attempts=1,
        enqueued_at=AT,
        executions=[interrupted, failed],
        result=TRANSIENT,
    )
    assert dict(show.task_fields(view))["attempts"] == (
        "1 (and 1 run(s) interrupted by a stop, not counted)"
    )
    heads = [line for line in show.execution_lines(view) if line.startswith("execution")]
    assert heads[0] == "execution 4 (run 1 on w1): interrupted"
    assert heads[1].startswith("execution 5 (run 2 on w2): failed")
