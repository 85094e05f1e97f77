"""The words the tracker posts: the pull request's body and the failure comment."""

from __future__ import annotations

from fleetd.tracker.base import Issue
from fleetd.tracker.report import failure_comment, pull_body, pull_title
from shared.models import (
    DiffSummary,
    ExecutionResult,
    FileChange,
    TaskSpec,
    TaskView,
    TokenUsage,
    WorkspaceResult,
)

ISSUE = Issue(repo="o/r", number=12, title="", body="", labels=(), url="")


def view(state: str, result: ExecutionResult) -> TaskView:
    spec = TaskSpec(prompt="p", agent="codex")
    return TaskView(id=3, state=state, spec=spec, attempts=2, enqueued_at=0, result=result)


def test_the_body_names_the_issue_and_gives_summary_diff_tokens_and_duration() -> None:
    diff = DiffSummary(
        files=[
            FileChange(path="a.py", insertions=3, deletions=1),
            FileChange(path="logo.png", insertions=None, deletions=None),
        ],
        insertions=3,
        deletions=1,
    )
    result = ExecutionResult(
        final_message="Fixed the crash.",
        usage=TokenUsage(input_tokens=100, output_tokens=20, total_tokens=120),
        duration_s=42.25,
        workspace=WorkspaceResult(path="/w", branch="fleet/3", base="b", commit="c", diff=diff),
    )
    body = pull_body(ISSUE, view("succeeded", result))
    assert body.startswith("Fixes #12\n\nFixed the crash.\n")
    for part in (
        "2 file(s), +3 -1",
        "`a.py`: +3 -1",
        "`logo.png`: binary",
        "Tokens: 120",
        "Duration: 42.2 s",
        "task 3, attempt 2 (codex)",
    ):
        assert part in body
    assert pull_title(ISSUE) == "Issue #12"


def test_a_failure_comment_gives_the_reason_the_class_and_how_to_run_again() -> None:
    result = ExecutionResult(reason="the model refused the key", failure_class="permanent")
    text = failure_comment(view("failed", result), label="agent-fleet")
    assert text.startswith("agent-fleet task 3 failed: the model refused the key")
    assert "(failure class: permanent)" in text and "Apply `agent-fleet` again" in text
    assert "Apply" not in failure_comment(view("timed_out", ExecutionResult()))
    assert failure_comment(view("timed_out", ExecutionResult())) == "agent-fleet task 3 timed out"
