"""The words the tracker posts: a pull request's title and body, the issue's comments."""

from __future__ import annotations

from fleetd.tracker.base import Issue
from shared.models import ExecutionResult, TaskView

SUMMARY_CHARS = 6000
FILES_SHOWN = 30
TITLE_CHARS = 200


def pull_title(issue: Issue) -> str:
    title = issue.title.strip() or f"Issue #{issue.number}"
    return title[:TITLE_CHARS]


def pull_body(issue: Issue, task: TaskView) -> str:
    """`Fixes #N`, the agent's summary, the diff stats, the tokens and the duration."""
    result = task.result or ExecutionResult()
    lines = [f"Fixes #{issue.number}", ""]
    summary = (result.final_message or "").strip()
    if summary:
        lines += [_clip(summary, SUMMARY_CHARS), ""]
    lines += [f"agent-fleet task {task.id}, attempt {task.attempts} ({task.spec.agent})", ""]
    lines += [_diff_stats(result), _usage(result), f"Duration: {result.duration_s:.1f} s"]
    return "\n".join(lines) + "\n"


def _diff_stats(result: ExecutionResult) -> str:
    workspace = result.workspace
    if workspace is None:
        return "Changes: none recorded"
    diff = workspace.diff
    head = f"Changes: {len(diff.files)} file(s), +{diff.insertions} -{diff.deletions}"
    rows = [
        f"- `{change.path}`: "
        + ("binary" if change.insertions is None else f"+{change.insertions} -{change.deletions}")
        for change in diff.files[:FILES_SHOWN]
    ]
    if len(diff.files) > FILES_SHOWN:
        rows.append(f"- … and {len(diff.files) - FILES_SHOWN} more")
    return "\n".join([head, *rows])


def _usage(result: ExecutionResult) -> str:
    usage = result.usage
    return (
        f"Tokens: {usage.total_tokens} ({usage.input_tokens} in, "
        f"{usage.cached_input_tokens} cached, {usage.output_tokens} out)"
    )


def opened_comment(task: TaskView, pull_url: str) -> str:
    return f"agent-fleet task {task.id} proposes a change: {pull_url}"


def pushed_comment(task: TaskView, commit: str) -> str:
    return f"agent-fleet task {task.id} pushed {commit[:12]} to this pull request."


def failure_comment(task: TaskView, why: str | None = None, label: str | None = None) -> str:
    """Why the task did not give a change, with its failure class; how to run it again, when
    applying `label` again would."""
    result = task.result or ExecutionResult()
    reason = why or result.reason or result.error
    line = f"agent-fleet task {task.id} {task.state.replace('_', ' ')}"
    if reason:
        line += f": {_clip(reason, 2000)}"
    if result.failure_class is not None:
        line += f" (failure class: {result.failure_class})"
    if label is None:
        return line
    return line + f"\n\nApply `{label}` again to run it once more (attempt {task.attempts + 1})."


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
