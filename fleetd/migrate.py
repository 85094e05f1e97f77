"""`fleetd migrate`: bring the PostgreSQL queue's schema up to date (or say where it stands).

fleetd's broker also migrates at start, under the same lock, so running this first is a
choice (an upgrade window, a database user with more rights), never a step that can be
forgotten. The URL comes from the config like fleetd's own (`queue.url`, FLEET_QUEUE_URL),
never from an argument, where `ps` would show its password.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from shared.config import load_config, url_without_password
from shared.errors import FleetError

app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.command(
    epilog=(
        "Examples: FLEET_QUEUE_URL=postgresql://fleet:PASSWORD@db.example:5432/fleet "
        "fleetd migrate; fleetd migrate --status. Exit 0: up to date (or nothing to do on "
        "SQLite); 1: the database cannot be reached or is newer than this fleetd; 2: usage."
    )
)
def migrate(
    config_file: Annotated[
        Path | None, typer.Option("--config", help="TOML config file (FLEET_CONFIG)")
    ] = None,
    status: Annotated[
        bool, typer.Option("--status", help="show the schema's version and apply nothing")
    ] = False,
) -> None:
    """Apply the PostgreSQL queue's pending schema migrations (queue.url / FLEET_QUEUE_URL),
    each in its own transaction, under a lock that fleetd's brokers starting meanwhile wait for.
    """
    try:
        config = load_config(os.environ, config_file)
    except FleetError as exc:
        typer.echo(f"fleetd migrate: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not config.queue.postgres:
        typer.echo(
            "queue.url is `sqlite`: queue.db is migrated by fleetd itself at start; set "
            "FLEET_QUEUE_URL (or queue.url) to a postgresql:// URL to migrate that database"
        )
        return
    # Imported here: psycopg is needed only with a PostgreSQL queue.
    from fleetd.stores.postgres import schema
    from fleetd.stores.postgres.database import BadQueueUrl, connect, describe
    from fleetd.stores.protocol import StoreUnavailable

    url = config.queue.url
    where = url_without_password(url)
    try:
        with connect(url, "fleetd-migrate", autocommit=True) as conn:
            if status:
                with conn.transaction():
                    version = schema.current_version(conn)
                pending = max(0, len(schema.MIGRATIONS) - version)
                typer.echo(f"{where}: schema version {version}; {pending} migration(s) pending")
                return
            applied = schema.migrate(conn)
    except (StoreUnavailable, BadQueueUrl, schema.SchemaTooNew) as exc:
        typer.echo(f"fleetd migrate: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # a failed migration: its transaction was rolled back
        typer.echo(f"fleetd migrate: {describe(url, exc)}", err=True)
        raise typer.Exit(1) from None
    if applied:
        typer.echo(f"{where}: applied migration(s) {', '.join(map(str, applied))}")
    else:
        typer.echo(f"{where}: up to date (schema version {len(schema.MIGRATIONS)})")


def main(argv: list[str]) -> None:
    app(args=argv, prog_name="fleetd migrate")
