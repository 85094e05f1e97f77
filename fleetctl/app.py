"""`fleetctl`: drive a running fleetd over its control socket.

Exit codes: 0 success, 1 failure, 2 usage error, 3 fleetd not running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleetctl import daemon, events, tasks, workspaces
from fleetctl.common import EXIT_USAGE, Session, fail
from shared.models import MAX_SECONDS

MIN_REQUEST_TIMEOUT = 0.1

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
        float, typer.Option("--request-timeout", help="seconds to wait for each answer")
    ] = 10.0,
) -> None:
    """Options shared by every command."""
    # Written so that NaN fails it too (typer's min= lets NaN through).
    if not MIN_REQUEST_TIMEOUT <= request_timeout <= MAX_SECONDS:
        fail(
            f"--request-timeout takes seconds from {MIN_REQUEST_TIMEOUT:g} to {MAX_SECONDS:.0f}",
            EXIT_USAGE,
        )
    ctx.obj = Session(state_dir=state_dir, timeout=request_timeout)


def main() -> None:
    app()
