"""`fleetctl`: drive a running fleetd over its control socket.

The entry point. `fleetctl status`, the command that health checks, scripts and people run
most, runs here without building the typer app (fleetctl.cli), whose import alone costs
about as much as zmq's and msgspec's together. Every other command line, and any `status`
line this module is not sure about (help, mistakes, unusual option forms), goes to the typer
app, so that usage, help and errors come from one place.

Exit codes: 0 success, 1 failure, 2 usage error, 3 fleetd not running.
"""

from __future__ import annotations

import errno
import os
import sys

# The root options of fleetctl.cli that the lean path reads; tests/unit/fleetctl/test_app.py
# fails when the typer app gains one this module does not know.
STATE_DIR = "--state-dir"
REQUEST_TIMEOUT = "--request-timeout"


def main() -> None:
    # Shell completion (click's `_<PROG>_COMPLETE` variable) is the typer app's job too.
    completing = any(name.endswith("_COMPLETE") for name in os.environ)
    lean = None if completing else _lean_status(sys.argv[1:])
    if lean is None:
        from fleetctl.cli import app

        app()
        return
    _run_status(*lean)


def _lean_status(args: list[str]) -> tuple[dict[str, str], bool] | None:
    """The root options and --json of `[--state-dir DIR] [--request-timeout S] status [--json]`
    (each option at most once, its value not empty nor starting with "-"); None for any other
    command line, which the typer app then parses."""
    options: dict[str, str] = {}
    rest = list(args)
    while rest and rest[0].startswith("--"):
        name, equals, value = rest.pop(0).partition("=")
        if name not in (STATE_DIR, REQUEST_TIMEOUT) or name in options:
            return None
        if not equals:
            if not rest:
                return None
            value = rest.pop(0)
        if not value or value.startswith("-"):
            return None
        options[name] = value
    if rest not in (["status"], ["status", "--json"]):
        return None
    return options, rest == ["status", "--json"]


def _run_status(options: dict[str, str], json_out: bool) -> None:
    """`fleetctl status` as the typer app runs it, from the same command function, or through
    the typer app when an option's value is one it refuses (it then says why)."""
    from pathlib import Path

    from fleetctl.common import DEFAULT_REQUEST_TIMEOUT, STATE_DIR_ENV, Session, request_timeout_ok

    timeout = DEFAULT_REQUEST_TIMEOUT
    where = options.get(STATE_DIR) or os.environ.get(STATE_DIR_ENV) or None
    try:
        timeout = float(options.get(REQUEST_TIMEOUT, timeout))
    except ValueError:
        timeout = float("nan")
    if not request_timeout_ok(timeout) or (where is not None and not _path_accepted(where)):
        from fleetctl.cli import app

        app()
        return
    from fleetctl.status import print_status

    try:
        print_status(Session(state_dir=Path(where) if where else None, timeout=timeout), json_out)
    except KeyboardInterrupt:  # as typer's main() answers one: quietly, 130
        raise SystemExit(130) from None
    except OSError as exc:  # as typer's main(): a closed pipe ends the output quietly
        if exc.errno != errno.EPIPE:
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None


def _path_accepted(value: str) -> bool:
    """Whether typer's Path type takes `value`: it refuses only an existing unreadable path."""
    try:
        os.stat(value)
    except OSError:
        return True
    return os.access(value, os.R_OK)
