"""`fleetd`: start the fleet, attached (`--foreground`) or detached."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from loguru import logger

from fleetd.runtime.lifecycle import configure_logging
from shared import messages as m
from shared.client import ControlClient
from shared.config import FleetConfig, iter_settings, load_config
from shared.errors import DaemonUnavailable, FleetError

DETACH_WAIT_SECONDS = 30.0
# Everything fleetd makes (databases, their -wal/-shm, agent records, sockets, logs) is the
# owner's alone, even in a state directory someone loosened; every process inherits this.
PRIVATE_UMASK = 0o077


def _settings_help() -> str:
    lines = [
        "Settings come from the TOML file (--config, $FLEET_CONFIG, or "
        "$XDG_CONFIG_HOME/agent-fleet/fleet.toml), then FLEET_* variables, then flags.\n\n",
        "KEY (in the TOML file) / ENVIRONMENT VARIABLE: description [default]\n\n",
    ]
    for key, env_name, text, default in iter_settings():
        shown = "none" if default is None else default
        lines.append(f"{key} / {env_name}: {text} [default: {shown}]\n\n")
    lines.append(
        "Tables, in the TOML file only: [limits] (running tasks per selector), [prices.MODEL]"
        " (USD per million tokens), [budget.per.SELECTOR] (a scope's daily caps); see the"
        " README's Scheduling and budgets. `fleetctl reload` or SIGHUP reads them again.\n\n"
    )
    return "".join(lines)


app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.command(epilog=_settings_help())
def fleetd(
    foreground: Annotated[
        bool, typer.Option("--foreground", help="stay attached; log to stderr (Docker, systemd)")
    ] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", min=1, help="number of parallel agents")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="state directory (FLEET_STATE_DIR)")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="TOML config file (FLEET_CONFIG)")
    ] = None,
    log_json: Annotated[
        bool | None, typer.Option("--log-json/--log-text", help="log format")
    ] = None,
    web_listen: Annotated[
        str | None,
        typer.Option("--web-listen", help="dashboard address HOST:PORT, or off (FLEET_WEB_LISTEN)"),
    ] = None,
) -> None:
    """Run the agent-fleet daemon: a supervisor, a broker, a recorder and N workers.

    `fleetd migrate` applies the PostgreSQL queue's schema migrations (see its --help).
    """
    os.umask(PRIVATE_UMASK)
    flags = {
        "workers": workers,
        "state_dir": str(state_dir) if state_dir else None,
        "log_json": log_json,
        "web.listen": web_listen,
    }
    try:
        config = load_config(os.environ, config_file, flags)
    except FleetError as exc:
        typer.echo(f"fleetd: {exc}", err=True)
        raise typer.Exit(2) from exc
    if foreground:
        source = config_file.absolute() if config_file else None
        # `fleetctl reload` and SIGHUP read the same file, variables and flags again.
        raise typer.Exit(_foreground(config, lambda: load_config(os.environ, source, flags)))
    raise typer.Exit(_detach(config, sys.argv[1:]))


def _foreground(config: FleetConfig, reload: Callable[[], FleetConfig] | None = None) -> int:
    # Imported here: the detaching parent never needs them.
    from fleetd.broker import process as broker
    from fleetd.recorder import process as recorder
    from fleetd.runtime.db import check_database_files
    from fleetd.supervisor import process as supervisor
    from fleetd.supervisor.children import Roles
    from fleetd.tracker import process as tracker
    from fleetd.web import process as web
    from fleetd.worker import process as worker

    configure_logging("supervisor", config.log_level, config.log_json)
    roles = Roles(
        broker=broker.run,
        recorder=recorder.run,
        worker=worker.run,
        web=web.run,
        tracker=tracker.run,
    )
    try:
        paths = config.paths()
        check_database_files([paths.queue_db, paths.events_db])
        return supervisor.run(config, dict(os.environ), roles, reload)
    except FleetError as exc:
        logger.error("{}", exc)
        return 1


def _detach(config: FleetConfig, argv: list[str]) -> int:
    """Start `fleetd --foreground` in a new session; return once its control socket answers."""
    paths = config.paths()
    try:
        paths.create()
    except FleetError as exc:
        typer.echo(f"fleetd: {exc}", err=True)
        return 1
    log_path = paths.logs_dir / "fleetd.log"
    with log_path.open("ab") as log:
        log_start = log.tell()
        child = subprocess.Popen(
            [sys.executable, "-m", "fleetd", "--foreground", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + DETACH_WAIT_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            typer.echo(f"fleetd: failed to start (exit {child.returncode}):", err=True)
            typer.echo(_tail(log_path, log_start), err=True)
            return 1
        try:
            with ControlClient(paths.control_socket, timeout=1.0) as client:
                status = client.request(m.GetStatus())
        except (DaemonUnavailable, FleetError):
            time.sleep(0.05)
            continue
        assert isinstance(status, m.Status)
        if status.pid == child.pid:
            typer.echo(f"fleetd started (pid {child.pid}); log: {log_path}")
            return 0
        time.sleep(0.05)
    typer.echo(f"fleetd: no answer within {DETACH_WAIT_SECONDS:g} s; see {log_path}", err=True)
    return 1


def _tail(path: Path, start: int, lines: int = 15) -> str:
    """The last lines this start wrote to the shared log file."""
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def main() -> None:
    if sys.argv[1:2] == ["migrate"]:  # the one subcommand; `fleetd [OPTIONS]` runs the fleet
        from fleetd.migrate import main as migrate

        migrate(sys.argv[2:])
        return
    app()
