"""Opening an APSW SQLite database the way both stores need it: WAL, busy timeout, migrations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import apsw

BUSY_TIMEOUT_MS = 5000


def open_database(path: Path, migrations: Sequence[str]) -> apsw.Connection:
    """Open (creating) a database in WAL mode and bring its schema up to date.

    `synchronous=NORMAL` in WAL mode keeps every committed transaction across a crash of any
    process; only a power loss can take back the last few commits.
    """
    conn = apsw.Connection(str(path))
    try:
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise apsw.Error(f"{path}: could not switch to WAL journal mode (got {mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: apsw.Connection, migrations: Sequence[str]) -> None:
    """Apply the migrations past `PRAGMA user_version`, each in its own transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(migrations):
        raise apsw.Error(
            f"database schema version {version} is newer than this fleetd knows "
            f"({len(migrations)}); upgrade agent-fleet"
        )
    for number, script in enumerate(migrations[version:], start=version + 1):
        with immediate(conn):
            conn.execute(script)
            conn.execute(f"PRAGMA user_version={number}")


@contextlib.contextmanager
def immediate(conn: apsw.Connection) -> Iterator[apsw.Connection]:
    """One `BEGIN IMMEDIATE` transaction: committed on success, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (a full disk does that): a second ROLLBACK would
        # fail and hide the real error.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
