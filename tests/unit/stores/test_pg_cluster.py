"""The tests' PostgreSQL cluster (tests/support/postgres.py): fresh databases, a password on
TCP, and a restart on the same port."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.postgres import PASSWORD, PgCluster

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


def test_each_test_gets_an_empty_database_behind_a_password(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
    wrong = pg_url.replace(PASSWORD, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong).close()


def test_a_restart_keeps_the_port_and_the_data(pg_cluster: PgCluster, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    before = pg_cluster.postmaster_pid()
    pg_cluster.restart(mode="immediate")  # a crash: recovery replays the WAL
    assert pg_cluster.postmaster_pid() not in (None, before)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT n FROM kept").fetchall() == [(7,)]
