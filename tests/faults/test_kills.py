"""kill -9 of each part of the fleet in the middle of work, proven from the databases."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import apsw
import pytest

from tests.support.fleet import Fleet, running_fleet, wait_for
from tests.support.procs import is_alive, processes_under

pytestmark = pytest.mark.timeout(120)


def _role_pid(fleet: Fleet, role: str) -> int:
    status = fleet.json("status")
    return next(p["pid"] for p in status["processes"] if p["role"] == role)


def _readonly(path: Path) -> apsw.Connection:
    return apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)


def _counter_agent(copy: Path, lines: int, pause: float) -> list[str]:
    """An agent printing numbered JSON lines, keeping its own copy to compare with."""
    script = (
        f'for i in $(seq 1 {lines}); do echo "{{\\"n\\":$i}}" | tee -a {copy}; sleep {pause}; done'
    )
    return ["--", "sh", "-c", script]


def _stored_payloads(fleet: Fleet, task: int) -> list[tuple[int, int, bytes]]:
    events = _readonly(fleet.state_dir / "events.db")
    return events.execute(
        "SELECT e.execution_id, e.seq, e.payload FROM events e"
        " JOIN streams s ON s.execution_id = e.execution_id WHERE s.task_id = ?"
        " ORDER BY e.execution_id, e.seq",
        (task,),
    ).fetchall()


def test_worker_killed_mid_task_loses_execution_and_retries(fleet: Fleet, tmp_path: Path) -> None:
    marker = tmp_path / "first-run-done"
    script = (
        f"if [ -e {marker} ]; then echo '{{\"ok\":1}}'; else touch {marker}; exec sleep 300; fi"
    )
    task = fleet.enqueue("retry me", "--", "sh", "-c", script)
    wait_for(marker.exists, what="the first run to start")
    agent_pid = fleet.agent_pid()
    shown = fleet.show(task)
    worker_role = "worker " + shown["executions"][0]["worker"][1:]
    os.kill(_role_pid(fleet, worker_role), signal.SIGKILL)
    shown = fleet.wait_state(task, "succeeded")
    first, second = shown["executions"]
    assert first["outcome"] == "lost"
    assert "worker process died" in first["result"]["reason"]
    assert second["outcome"] == "succeeded" and second["attempt"] == 2
    assert shown["attempts"] == 2
    wait_for(lambda: not is_alive(agent_pid), 5, what="the orphaned agent to be ended")
    wait_for(
        lambda: any(
            p["role"] == worker_role and p["alive"] for p in fleet.json("status")["processes"]
        ),
        what="the worker to be restarted",
    )


def test_max_attempts_fails_a_task_whose_worker_keeps_dying(fleet: Fleet) -> None:
    task = fleet.enqueue("doomed", "--max-attempts", "2", "--", "sleep", "300")

    def attempt_started(attempt: int) -> dict | None:
        shown = fleet.show(task)
        executions = shown["executions"]
        if len(executions) == attempt and executions[-1]["started_at"]:
            return shown
        return None

    for attempt in (1, 2):
        shown = wait_for(lambda a=attempt: attempt_started(a), what=f"attempt {attempt}")
        role = "worker " + shown["executions"][-1]["worker"][1:]
        os.kill(_role_pid(fleet, role), signal.SIGKILL)
    shown = fleet.wait_state(task, "failed")
    assert [e["outcome"] for e in shown["executions"]] == ["lost", "lost"]
    assert shown["attempts"] == 2


def test_recorder_killed_mid_stream_keeps_every_event_once(fleet: Fleet, tmp_path: Path) -> None:
    copy = tmp_path / "copy.jsonl"
    task = fleet.enqueue("count", *_counter_agent(copy, 300, 0.005))
    wait_for(lambda: copy.exists() and len(copy.read_text().splitlines()) > 50, what="output")
    os.kill(_role_pid(fleet, "recorder"), signal.SIGKILL)
    fleet.wait_state(task, "succeeded", timeout=60)
    rows = _stored_payloads(fleet, task)
    assert [seq for _, seq, _ in rows] == list(range(1, 301))
    assert [payload.decode() for _, _, payload in rows] == copy.read_text().splitlines()


def test_broker_killed_mid_work_loses_and_duplicates_nothing(fleet: Fleet) -> None:
    tasks = [
        fleet.enqueue(f"t{i}", "--", "sh", "-c", "sleep 0.05; echo '{\"done\":1}'")
        for i in range(40)
    ]
    wait_for(lambda: fleet.json("status")["counts"]["succeeded"] >= 5, what="some progress")
    os.kill(_role_pid(fleet, "broker"), signal.SIGKILL)
    for task in tasks:
        fleet.wait_state(task, "succeeded", timeout=60)
    queue = _readonly(fleet.state_dir / "queue.db")
    per_task = dict(
        queue.execute(
            "SELECT task_id, COUNT(*) FROM executions WHERE outcome = 'succeeded' GROUP BY task_id"
        ).fetchall()
    )
    assert per_task == {task: 1 for task in tasks}


def test_whole_daemon_killed_then_restarted_recovers(tmp_path: Path) -> None:
    copy = tmp_path / "copy.jsonl"
    with running_fleet("--workers", "1") as fleet:
        task = fleet.enqueue("count", *_counter_agent(copy, 100000, 0.01))
        wait_for(lambda: copy.exists() and len(copy.read_text().splitlines()) > 30, what="output")
        agent_pid = fleet.agent_pid()
        fleet.kill_all()  # the supervisor and every child; the agent survives in its own session
        assert is_alive(agent_pid)
        printed_before_crash = len(copy.read_text().splitlines())
        fleet.start()
        wait_for(lambda: not is_alive(agent_pid), 10, what="the old agent to be ended")
        shown = wait_for(
            lambda: (s := fleet.show(task))["executions"][0]["outcome"] != "running" and s,
            what="the old execution to be closed",
        )
        assert shown["executions"][0]["outcome"] == "lost"
        assert (
            "fleetd stopped without ending this run" in shown["executions"][0]["result"]["reason"]
        )
        first_execution = shown["executions"][0]["id"]
        # Events the agent printed before the crash come back from the spool.
        wait_for(
            lambda: (
                sum(1 for e, _, _ in _stored_payloads(fleet, task) if e == first_execution)
                >= printed_before_crash - 5
            ),
            what="spooled events to be recovered",
        )
        rows = [r for r in _stored_payloads(fleet, task) if r[0] == first_execution]
        assert [seq for _, seq, _ in rows] == list(range(1, len(rows) + 1))
        fleet.ctl("cancel", str(task))
        fleet.wait_state(task, "cancelled")
        check = _readonly(fleet.state_dir / "queue.db").execute("PRAGMA integrity_check")
        assert check.fetchone()[0] == "ok"
        check = _readonly(fleet.state_dir / "events.db").execute("PRAGMA integrity_check")
        assert check.fetchone()[0] == "ok"
    assert not processes_under(tmp_path)
