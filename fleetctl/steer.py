"""Talking to a running agent: say (steer its turn) and interrupt (end its turn).

Only codex tasks run with codex.mode = app-server listen; fleetd refuses the others, saying so.
What became of a message is kept as an event of the execution (`fleetctl events TASK`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from fleetctl.common import EXIT_USAGE, JsonOption, fail, print_json, session
from shared import messages as m

app = typer.Typer()


@app.command()
def say(
    ctx: typer.Context,
    task: Annotated[int, typer.Argument(help="task id (a running codex task)")],
    message: Annotated[str, typer.Argument(help="what to tell the agent, in its current turn")],
    json_out: JsonOption = False,
) -> None:
    """Steer a running task's agent: the message joins its current turn (codex turn/steer)."""
    if not message.strip():
        fail("the message is empty: say what the agent should know", EXIT_USAGE)
    if len(message) > m.MAX_SAY_CHARS:
        fail(f"the message is longer than {m.MAX_SAY_CHARS} characters", EXIT_USAGE)
    _delivered(session(ctx).ask(m.SayToTask(task=task, message=message)), json_out, "message")


@app.command()
def interrupt(
    ctx: typer.Context,
    task: Annotated[int, typer.Argument(help="task id (a running codex task)")],
    json_out: JsonOption = False,
) -> None:
    """End a running task's current turn without killing its agent; the task then ends with
    what it has (unlike cancel)."""
    _delivered(session(ctx).ask(m.InterruptTask(task=task)), json_out, "interrupt")


def _delivered(reply: m.Message, json_out: bool, what: str) -> None:
    assert isinstance(reply, m.Delivered)
    if json_out:
        print_json({"task": reply.task, "execution": reply.execution})
    else:
        typer.echo(
            f"task {reply.task}: {what} sent to its agent (execution {reply.execution}); "
            f"`fleetctl events {reply.task}` shows what became of it"
        )
