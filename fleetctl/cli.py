"""The `fleetctl` typer app: every command group and the options they share.

Exit codes: 0 success, 1 failure, 2 usage error, 3 fleetd not running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleetctl import daemon, dashboard, events, schedule, steer, tasks, tracker, workspaces
from fleetctl.common import (
    DEFAULT_REQUEST_TIMEOUT,
    EXIT_USAGE,
    MIN_REQUEST_TIMEOUT,
    STATE_DIR_ENV,
    Session,
    fail,
    request_timeout_ok,
)
from shared.models import MAX_SECONDS

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
app.add_typer(dashboard.app)
app.add_typer(steer.app)
app.add_typer(schedule.app)
app.add_typer(tracker.app)


@app.callback()
def root(
    ctx: typer.Context,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", envvar=STATE_DIR_ENV, help="fleetd's state directory"),
    ] = None,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", help="seconds to wait for each answer")
    ] = DEFAULT_REQUEST_TIMEOUT,
) -> None:
    """Options shared by every command."""
    # Checked here, not with typer's min=, which lets NaN through.
    if not request_timeout_ok(request_timeout):
        fail(
            f"--request-timeout takes seconds from {MIN_REQUEST_TIMEOUT:g} to {MAX_SECONDS:.0f}",
            EXIT_USAGE,
        )
    ctx.obj = Session(state_dir=state_dir, timeout=request_timeout)
