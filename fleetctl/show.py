"""`fleetctl show` in words: a task, then each execution's outcome and what its run produced."""

from __future__ import annotations

from typing import Any

from fleetctl.common import one_line, short_time
from fleetctl.display import visible_line
from shared.models import (
    ExecutionOutcome,
    ExecutionResult,
    ExecutionView,
    TaskState,
    TaskView,
    TokenUsage,
    WorkspaceResult,
)

LABEL_WIDTH = 16
MAX_FILES = 20
TIMEOUT_KINDS = {"wall": "wall-clock limit reached", "idle": "no output for too long"}


def task_fields(view: TaskView) -> list[tuple[str, Any]]:
    """(label, value) lines about the task itself; None values are left out by the caller."""
    spec = view.spec
    return [
        ("task", view.id),
        ("state", task_state_words(view)),
        ("agent", spec.agent),
        ("prompt", one_line(spec.prompt, 200)),
        ("argv", " ".join(spec.argv) if spec.argv else None),
        ("cwd", spec.cwd),
        ("repo", f"{spec.repo} ({spec.ref})" if spec.repo and spec.ref else spec.repo),
        ("model", spec.model),
        ("labels", ", ".join(f"{k}={v}" for k, v in spec.labels.items()) or None),
        ("priority", view.priority or None),
        ("after", _after_words(spec.after, spec.after_any)),
        ("budget", _budget_words(spec.max_tokens, spec.max_cost)),
        ("attempts", _attempts_words(view)),
        ("enqueued", short_time(view.enqueued_at)),
        ("started", short_time(view.started_at)),
        ("finished", short_time(view.finished_at)),
    ]


def _attempts_words(view: TaskView) -> str:
    """Attempts spent; runs a stop interrupted are not among them, and are said apart."""
    interrupted = sum(e.outcome == "interrupted" for e in view.executions)
    if not interrupted:
        return str(view.attempts)
    return f"{view.attempts} (and {interrupted} run(s) interrupted by a stop, not counted)"


def task_state_words(view: TaskView) -> str:
    """The task's state, with why it ended or when it runs again."""
    if view.state == "queued" and view.waiting:
        return f"queued (waiting for {view.waiting} of tasks {_ids(view.spec.after)} to end)"
    if view.state == "queued" and view.not_before is not None:
        when = "retry at" if view.attempts else "not before"
        return f"queued ({when} {clock(view.not_before)})"
    if view.result is None or view.state in ("queued", "running", "succeeded"):
        return view.state
    words = outcome_words(view.state, view.result)
    if view.state == "failed" and view.result.failure_class == "transient":
        words += f"; out of attempts: `fleetctl retry {view.id}` tries again"
    return words


def _after_words(after: list[int], after_any: bool) -> str | None:
    if not after:
        return None
    return f"{_ids(after)} ({'once they ended' if after_any else 'once they succeeded'})"


def _budget_words(tokens: int | None, cost: float | None) -> str | None:
    words = [f"{tokens} tokens"] if tokens else []
    words += [f"{cost:g} USD"] if cost else []
    return ", ".join(words) or None


def _ids(tasks: list[int]) -> str:
    return ", ".join(str(task) for task in tasks)


def execution_lines(view: TaskView) -> list[str]:
    """One block per execution: its outcome in words, then what its run produced."""
    lines: list[str] = []
    last = view.executions[-1].id if view.executions else None
    for execution in view.executions:
        retry_at = view.not_before if execution.id == last and view.state == "queued" else None
        lines.append("")
        lines.extend(_execution_block(execution, retry_at))
    return lines


def outcome_words(
    outcome: ExecutionOutcome | TaskState,
    result: ExecutionResult | None,
    retry_at: int | None = None,
) -> str:
    """e.g. `failed (transient: HTTP 500 ... from the model provider; retrying at 20:31:05)`."""
    if result is None:
        return outcome
    shown: str = outcome
    if outcome == "timed_out":
        why = result.reason or TIMEOUT_KINDS.get(result.timeout_kind or "")
        shown = "timed out"
    elif outcome == "failed" and result.failure_class is not None:
        why = f"{result.failure_class}: {result.reason or result.error}"
    else:
        why = result.reason or (result.error if outcome != "succeeded" else None)
    if retry_at is not None:
        why = f"{why}; retrying at {clock(retry_at)}" if why else f"retrying at {clock(retry_at)}"
    return f"{shown} ({why})" if why else shown


def _execution_block(execution: ExecutionView, retry_at: int | None) -> list[str]:
    # `attempt` numbers the task's runs; a run a stop interrupted spends no attempt (the task's
    # `attempts`), so the two differ after one: "run", not "attempt", here.
    who = f"run {execution.attempt}" + (f" on {execution.worker}" if execution.worker else "")
    words = outcome_words(execution.outcome, execution.result, retry_at)
    if execution.outcome == "running":
        words = f"running since {short_time(execution.started_at or execution.claimed_at)}"
    head = f"execution {execution.id} ({who}): {words}"
    result = execution.result
    if result is None:
        return [head]
    fields: list[tuple[str, Any]] = [
        ("exit", exit_words(result)),
        ("timeout", TIMEOUT_KINDS.get(result.timeout_kind) if result.timeout_kind else None),
        ("duration", f"{result.duration_s:.3f} s" if result.duration_s else None),
        ("commands", _commands(result)),
        ("tokens", token_words(result.usage)),
        ("cost", f"${result.cost_usd:.4f}" if result.cost_usd else None),
        ("turns", result.turns),
        ("final message", one_line(result.final_message, 300)),
        ("error", one_line(result.error, 300) if _adds(result.error, result.reason) else None),
        ("stderr", one_line(result.stderr_tail, 200) if execution.outcome == "failed" else None),
        ("thread", result.thread_id),
        ("session", result.session_file),
    ]
    lines = [head, *field_lines(fields, indent=2)]
    if result.workspace is not None:
        lines.extend(workspace_lines(result.workspace))
    return lines


def _adds(error: str | None, reason: str | None) -> bool:
    """Whether the raw error says more than the reason already shown."""
    return bool(error) and error not in (reason or "")


def exit_words(result: ExecutionResult) -> str | None:
    if result.signal is not None:
        return f"signal {result.signal}"
    if result.exit_code is not None:
        return f"status {result.exit_code}"
    return None


def _commands(result: ExecutionResult) -> str | None:
    if not result.commands:
        return None
    return f"{result.commands} run, {result.failed_commands} failed"


def token_words(usage: TokenUsage) -> str | None:
    if not (usage.input_tokens or usage.output_tokens):
        return None
    cached = f" ({usage.cached_input_tokens} cached)" if usage.cached_input_tokens else ""
    reasoning = (
        f" ({usage.reasoning_output_tokens} reasoning)" if usage.reasoning_output_tokens else ""
    )
    return (
        f"{usage.input_tokens} in{cached}, {usage.output_tokens} out{reasoning},"
        f" {usage.total_tokens} total"
    )


def workspace_lines(workspace: WorkspaceResult) -> list[str]:
    """Branch, commit, and the files changed with their +/- counts and totals."""
    commit = workspace.commit[:10] if workspace.commit else "no commit (nothing changed)"
    diff = workspace.diff
    files = [f"{f.path} {_plus_minus(f.insertions, f.deletions)}" for f in diff.files]
    if len(files) > MAX_FILES:
        files = [*files[:MAX_FILES], f"… and {len(files) - MAX_FILES} more"]
    if diff.files:
        count = len(diff.files)
        files.append(
            f"{count} file{'s' if count != 1 else ''} changed, +{diff.insertions} -{diff.deletions}"
        )
    fields: list[tuple[str, Any]] = [
        ("branch", f"{workspace.branch} at {commit}"),
        ("worktree", workspace.path),
        ("patch", workspace.patch_file),
    ]
    lines = field_lines(fields, indent=2)
    for index, text in enumerate(files):
        label = "files:" if index == 0 else ""
        lines.append(f"  {label:<{LABEL_WIDTH}}{visible_line(text)}")
    return lines


def _plus_minus(insertions: int | None, deletions: int | None) -> str:
    if insertions is None or deletions is None:
        return "(binary)"
    return f"+{insertions} -{deletions}"


def field_lines(fields: list[tuple[str, Any]], indent: int = 0) -> list[str]:
    """`label:  value` lines, aligned; fields whose value is None are left out."""
    pad = " " * indent
    return [
        f"{pad}{name + ':':<{LABEL_WIDTH}}{visible_line(str(value))}"
        for name, value in fields
        if value is not None
    ]


def clock(us: int) -> str:
    """Time of day in UTC (retries are minutes away, so the date adds nothing)."""
    stamp = short_time(us) or ""
    return stamp[11:] + " UTC"
