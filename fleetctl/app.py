"""`fleetctl`: drive a running fleetd over its control socket.

Exit codes: 0 success, 1 failure, 2 usage error, 3 fleetd not running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleetctl import daemon, events, tasks, workspaces
from fleetctl.common import Session

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Drive agent-fleet: enqueue tasks, follow their events, manage the daemon.\n\n"
    "Exit codes: 0 success, 1 failure, 2 usage error, 3 fleetd not running.",
)
app.add_typer(tasks.app)
app.add_typer(events.app)
app.add_typer(workspaces.app)
app.add_typer(daemon.app)


@app.callback()
def root(
    ctx: typer.Context,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", envvar="FLEET_STATE_DIR", help="fleetd's state directory"),
    ] = None,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", min=0.1, help="seconds to wait for each answer")
    ] = 10.0,
) -> None:
    """Options shared by every command."""
    ctx.obj = Session(state_dir=state_dir, timeout=request_timeout)


def main() -> None:
    app()
