"""The WAL's pages are copied back into the database by a thread, not by the writer's commits."""

from __future__ import annotations

import time
from pathlib import Path

import apsw

from fleetd.runtime.db import WalCheckpointer, immediate, open_database

SCHEMA = ["CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"]


def _write_pages(conn: apsw.Connection, rows: int) -> None:
    for start in range(0, rows, 50):
        with immediate(conn):
            conn.executemany(
                "INSERT INTO t (body) VALUES (?)", [("x" * 3000,) for _ in range(start, start + 50)]
            )


def test_committed_pages_reach_the_database_file_without_a_commit_copying_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.db"
    writer = open_database(path, SCHEMA)
    checkpointer = WalCheckpointer(writer, path)
    try:
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == (
            WalCheckpointer.BACKSTOP_PAGES
        )
        before = path.stat().st_size
        # ~400 pages: under SQLite's default automatic checkpoint (1,000 pages) and far under
        # the backstop, so only the thread can have copied them.
        _write_pages(writer, 400)
        deadline = time.monotonic() + 10
        while path.stat().st_size < before + 400 * 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size >= before + 400 * 3000
        # The writer goes on while checkpoints run beside it, and reads see every row.
        _write_pages(writer, 100)
        assert writer.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 500
    finally:
        checkpointer.close()
        writer.close()
    assert not checkpointer.thread.is_alive()
