"""`fleetd migrate`: applies the PostgreSQL queue's migrations once, says where a schema
stands, and fails cleanly (exit 1, one line, no password, no traceback) when it cannot."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fleetd.stores.postgres.schema import MIGRATIONS
from tests.support.postgres import PASSWORD, PgCluster

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


def migrate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEET_QUEUE_URL": url, "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "-m", "fleetd", "migrate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_applies_then_is_up_to_date(pg_url: str) -> None:
    before = migrate(pg_url, "--status")
    assert before.returncode == 0, before.stderr
    assert f"schema version 0; {len(MIGRATIONS)} migration(s) pending" in before.stdout
    first = migrate(pg_url)
    assert first.returncode == 0, first.stderr
    assert "applied migration(s) 1" in first.stdout
    again = migrate(pg_url)
    assert again.returncode == 0 and "up to date" in again.stdout
    for run in (before, first, again):
        assert PASSWORD not in run.stdout + run.stderr
        assert "***" in run.stdout  # the URL is shown, its password masked


def test_migrate_against_an_unreachable_database_says_so_in_one_line(
    pg_cluster: PgCluster,
) -> None:
    url = pg_cluster.url("postgres").replace(f":{pg_cluster.port}/", ":1/")
    run = migrate(url)
    assert run.returncode == 1
    assert "cannot use the PostgreSQL queue" in run.stderr and "Connection refused" in run.stderr
    assert PASSWORD not in run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_migrate_usage_errors_exit_2(pg_url: str) -> None:
    run = migrate(pg_url, "--no-such-flag")
    assert run.returncode == 2 and "No such option" in run.stderr
    bad = migrate("mysql://fleet:" + PASSWORD + "@db/fleet")
    assert bad.returncode == 2 and "queue.url" in bad.stderr and PASSWORD not in bad.stderr


def test_a_url_libpq_cannot_read_is_an_error_to_fix_not_an_outage_to_wait_for(
    pg_cluster: PgCluster,
) -> None:
    run = migrate(pg_cluster.url("postgres") + "?no_such_option=1")
    assert run.returncode == 1
    assert "fix queue.url" in run.stderr and "Traceback" not in run.stderr
    assert PASSWORD not in run.stdout + run.stderr
