"""A real fleetd whose queue is PostgreSQL (FLEET_QUEUE_URL at the tests' cluster): command
tasks run to success, their rows are in PostgreSQL (no queue.db), and the URL's password
shows up in no log and no fleetctl output."""

from __future__ import annotations

import os
import socket

import psycopg
import pytest

from tests.support.fleet import running_fleet
from tests.support.postgres import PASSWORD

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

FINAL = '{"type":"item.completed","item":{"id":"i1","type":"agent_message","text":"done"}}'


def test_fleetd_runs_command_tasks_on_a_postgresql_queue(pg_url: str) -> None:
    env = {**os.environ, "FLEET_QUEUE_URL": pg_url}
    with running_fleet("--workers", "2", env=env) as fleet:
        script = f"cat >/dev/null; echo '{FINAL}'"
        tasks = [fleet.enqueue(f"task {i}", "--", "sh", "-c", script) for i in range(4)]
        for task in tasks:
            shown = fleet.wait_state(task, "succeeded", timeout=60)
            assert shown["result"]["final_message"] == "done"
        outputs = [
            fleet.ctl("status").stdout,
            fleet.ctl("status", "--json").stdout,
            fleet.ctl("list", "--json").stdout,
            fleet.ctl("show", str(tasks[0]), "--json").stdout,
        ]
        assert not (fleet.state_dir / "queue.db").exists(), "the queue lives in PostgreSQL"
        log = fleet.log()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT t.state, e.outcome, e.node FROM tasks t JOIN executions e ON e.task_id = t.id"
        ).fetchall()
    assert sorted(rows) == [("succeeded", "succeeded", socket.gethostname())] * 4
    for text in [*outputs, log]:
        assert PASSWORD not in text
