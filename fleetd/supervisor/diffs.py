"""`fleetctl diff`: the patch an execution of a repository task committed, from its result."""

from __future__ import annotations

from pathlib import Path

from shared import messages as m

MAX_PATCH_BYTES = 64 * 1024 * 1024


def diff_reply(request: m.GetDiff, reply: m.Message) -> m.Message:
    """The patch of the asked execution (default: the latest that committed one)."""
    if not isinstance(reply, m.TaskDetail):
        return reply
    task = reply.task
    candidates = [
        e
        for e in task.executions
        if e.result is not None
        and e.result.workspace is not None
        and (request.execution is None or e.id == request.execution)
    ]
    if not candidates:
        what = f"execution {request.execution} of task" if request.execution else "task"
        return m.ErrorReply(
            code="not_found",
            message=f"{what} {task.id} has no diff: it ran without --repo, or no attempt of it "
            "has finished yet (`fleetctl show` tells)",
        )
    execution = candidates[-1]
    workspace = execution.result.workspace  # type: ignore[union-attr]
    assert workspace is not None
    patch = b""
    if workspace.patch_file:
        try:
            with Path(workspace.patch_file).open("rb") as handle:
                patch = handle.read(MAX_PATCH_BYTES)
        except OSError as exc:
            return m.ErrorReply(
                code="not_found", message=f"the patch file {workspace.patch_file} is gone: {exc}"
            )
    return m.TaskDiff(
        task=task.id,
        execution=execution.id,
        branch=workspace.branch,
        base=workspace.base,
        commit=workspace.commit,
        patch=patch,
    )
