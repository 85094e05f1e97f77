"""`fleetctl dashboard`: the login link of the running fleet's dashboard."""

from __future__ import annotations

import os
from urllib.parse import quote

import typer

from fleetctl.common import EXIT_FAILURE, EXIT_USAGE, JsonOption, echo, fail, print_json, session
from shared import messages as m
from shared.config import load_config
from shared.errors import FleetError

app = typer.Typer()


@app.command()
def dashboard(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Print the dashboard's login link (open it once: it logs the browser in); with --json,
    the URL and the token that API clients send as `Authorization: Bearer TOKEN`."""
    ctl = session(ctx)
    status = ctl.ask(m.GetStatus())
    assert isinstance(status, m.Status)
    if status.web_url is None:
        fail(
            "fleetd runs without its dashboard (web.listen is off, or its port was taken: "
            "see the fleetd log); set web.listen (FLEET_WEB_LISTEN) and restart fleetd",
            EXIT_FAILURE,
        )
    token = _token(ctl.state_dir)
    if json_out:
        print_json({"url": status.web_url, "token": token})
        return
    echo(f"{status.web_url}login?token={quote(token)}")


def _token(state_dir: object) -> str:
    flags = {"state_dir": str(state_dir) if state_dir else None}
    try:
        config = load_config(os.environ, None, flags)
    except FleetError as exc:
        fail(str(exc), EXIT_USAGE)
    if config.web.token:
        return config.web.token
    path = config.paths().web_token
    try:
        return path.read_text().strip()
    except PermissionError:
        fail(f"permission denied on {path}: run this as the user who runs fleetd")
    except OSError as exc:
        fail(f"cannot read the dashboard's token {path}: {exc.strerror}")
