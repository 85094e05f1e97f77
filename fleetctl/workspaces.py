"""Workspace commands: diff (what a repository task committed) and gc (remove old worktrees)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fleetctl.common import JsonOption, print_json, session
from shared import messages as m

app = typer.Typer()

GC_TIMEOUT = 600.0  # hooks (before_remove) may take a while on many worktrees


@app.command()
def diff(
    ctx: typer.Context,
    task: Annotated[int, typer.Argument(help="task id")],
    execution: Annotated[
        int | None, typer.Option(help="this execution's diff (default: the latest)")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Print the diff a repository task committed on its branch fleet/<task>."""
    reply = session(ctx).ask(m.GetDiff(task=task, execution=execution))
    assert isinstance(reply, m.TaskDiff)
    patch = reply.patch.decode("utf-8", errors="replace")
    if json_out:
        print_json(
            {
                "task": reply.task,
                "execution": reply.execution,
                "branch": reply.branch,
                "base": reply.base,
                "commit": reply.commit,
                "patch": patch,
            }
        )
        return
    if not reply.patch:
        typer.echo(f"# task {reply.task} changed nothing (branch {reply.branch})", err=True)
        return
    sys.stdout.buffer.write(reply.patch)
    sys.stdout.flush()


@app.command()
def gc(
    ctx: typer.Context,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than", min=0, help="only tasks finished at least this many hours ago"
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Remove the worktrees of finished tasks (their branches stay). Running tasks keep theirs."""
    ctl = session(ctx)
    ctl.timeout = max(ctl.timeout, GC_TIMEOUT)
    reply = ctl.ask(m.CollectWorkspaces(older_than_hours=older_than))
    assert isinstance(reply, m.WorkspacesCollected)
    if json_out:
        print_json({"removed": reply.removed, "busy": reply.busy})
        return
    typer.echo(f"removed {len(reply.removed)} worktree(s)" + _ids(reply.removed))
    if reply.busy:
        typer.echo(f"kept {len(reply.busy)} in use" + _ids(reply.busy))


def _ids(tasks: list[int]) -> str:
    return ": tasks " + ", ".join(map(str, tasks)) if tasks else ""
