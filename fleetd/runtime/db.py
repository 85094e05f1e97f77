"""Opening an APSW SQLite database the way both stores need it: WAL, busy timeout, migrations."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import apsw
from loguru import logger

from shared.errors import StateDirError

BUSY_TIMEOUT_MS = 5000
SQLITE_HEADER = b"SQLite format 3\x00"


def _check_writable(path: Path) -> None:
    """Readable and writable by us, and not marked read-only (root may write a 0400 file, but
    whoever made it so meant it)."""
    try:
        mode = path.stat().st_mode
    except OSError:  # absent, or the state directory is unusable: `StatePaths.create` says why
        return
    if not (mode & stat.S_IWUSR) or not os.access(path, os.R_OK | os.W_OK):
        raise StateDirError(
            f"{path} is not writable (mode {stat.S_IMODE(mode):04o}): fleetd must write it; "
            "fix its mode or owner"
        )


def check_database_files(paths: Iterable[Path]) -> None:
    """At start, before any child: each database is absent, or an SQLite file we may write.

    Opened by its process, a corrupt or read-only database would crash it at each restart (or
    at its first write) until the crash-loop limit; this says why at once. It reads the header
    without SQLite, so the supervisor still forks before any connection exists.
    """
    for path in paths:
        for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            _check_writable(part)
        if not path.is_file():
            continue  # absent (created at start), or something SQLite itself will refuse
        try:
            with path.open("rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise StateDirError(f"cannot read {path}: {exc.strerror}") from exc
        if header and header != SQLITE_HEADER:
            raise StateDirError(
                f"{path} is not a database (corrupt or overwritten): move it aside to start "
                "with an empty one, or restore it from a backup"
            )


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


class WalCheckpointer:
    """Copies a WAL database's committed pages back into the database from a thread of its
    own, so that the writer's commits never do it.

    SQLite's automatic checkpoint runs inside the commit that crosses `wal_autocheckpoint`
    pages (1,000 by default): with the queue's ~20 pages per task that was every ~25 tasks,
    and each copied the pages and synced both files in the broker's loop, a stall that
    every worker waiting on a claim felt. A PASSIVE checkpoint here never blocks the writer
    (SQLite releases the GIL while it runs); the writer's own automatic checkpoint stays as a
    backstop, at BACKSTOP_PAGES, for a checkpoint held back by a long read. What a commit
    keeps across a crash is unchanged: that is the WAL's and `synchronous`'s business.
    """

    INTERVAL_S = 0.2
    BACKSTOP_PAGES = 16_000  # 64 MB of WAL

    def __init__(self, writer: apsw.Connection, path: Path) -> None:
        writer.execute(f"PRAGMA wal_autocheckpoint={self.BACKSTOP_PAGES}")
        self.path = path
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn: apsw.Connection | None = None
        failing = False
        try:
            while not self.stopping.wait(self.INTERVAL_S):
                try:
                    conn = conn or self._connect()
                    conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                except apsw.Error as exc:  # a full disk, say: the writer's backstop remains
                    if not failing:
                        logger.warning("cannot checkpoint {}: {}", self.path.name, exc)
                    failing = True
                else:
                    failing = False
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> apsw.Connection:
        conn = apsw.Connection(str(self.path))
        try:
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            # A connection sees the WAL only once it has read the database: until then its
            # checkpoints do nothing (SQLite answers -1, "not in WAL mode").
            conn.execute("PRAGMA journal_mode").fetchall()
        except apsw.Error:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
