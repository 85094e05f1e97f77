"""Failure classes, automatic retries and `fleetctl retry` through a real fleetd and fleetctl.

The `command` agent plays Codex: it prints Codex-shaped JSON lines (the real samples in
tests/data/codex where they fit) and exits as Codex would.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import Fleet, running_fleet, wait_for

pytestmark = pytest.mark.timeout(90)

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "codex"
SLEEPER = ["--", "sh", "-c", 'echo \'{"type":"started"}\'; exec sleep 300']
DONE = (
    'echo \'{"type":"item.completed","item":{"id":"i1","type":"agent_message","text":"done"}}\';'
    ' echo \'{"type":"turn.completed","usage":{"input_tokens":5,"output_tokens":2}}\''
)


def fleet_with(**settings: str) -> Iterator[Fleet]:
    env = {**os.environ, **settings}
    with running_fleet("--workers", "2", env=env) as started:
        yield started


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """Quick retries, and a Codex binary that does not exist (Codex tasks fail to start);
    a dummy key, so that fleetd takes Codex tasks at all."""
    yield from fleet_with(
        FLEET_QUEUE_RETRY_BACKOFF_SECONDS="0.2",
        FLEET_CODEX_BIN="/nonexistent/codex",
        CODEX_API_KEY="sk-test-dummy-key-0000",
    )


@pytest.fixture
def slow_fleet() -> Iterator[Fleet]:
    """Retries that wait a minute: long enough to look at a task waiting for one."""
    yield from fleet_with(FLEET_QUEUE_RETRY_BACKOFF_SECONDS="60")


def fails_first(counter: Path, first: str) -> list[str]:
    """argv of an agent that runs `first` on its first run, and succeeds on the next ones."""
    script = (
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter};"
        f' if [ "$n" -eq 1 ]; then {first}; fi; {DONE}'
    )
    return ["--", "sh", "-c", script]


def sample(name: str, exit_code: int = 1) -> str:
    return f"cat {shlex.quote(str(SAMPLES / name))}; exit {exit_code}"


def test_transient_failure_is_retried_and_succeeds(fleet: Fleet, tmp_path: Path) -> None:
    argv = fails_first(tmp_path / "n", sample("codex-exec-http500-noretry.jsonl"))
    task = fleet.enqueue("flaky provider", *argv)
    shown = fleet.wait_state(task, "succeeded", "failed")
    assert shown["state"] == "succeeded"
    assert shown["attempts"] == 2
    first, second = shown["executions"]
    assert first["outcome"] == "failed"
    assert first["result"]["failure_class"] == "transient"
    assert first["result"]["reason"] == "the model provider is overloaded (high demand)"
    assert first["result"]["thread_id"] == "01a20f80-38f9-74b2-bc08-2714fce759ba"
    assert second["outcome"] == "succeeded" and second["result"]["final_message"] == "done"
    assert second["result"].get("failure_class") is None
    human = fleet.ctl("show", str(task)).stdout
    assert "failed (transient: the model provider is overloaded (high demand))" in human


def test_unauthorized_fails_at_once(fleet: Fleet) -> None:
    argv = ["--", "sh", "-c", sample("codex-exec-http401-retries.jsonl")]
    task = fleet.enqueue("bad key", "--max-attempts", "3", *argv)
    shown = fleet.wait_state(task, "failed")
    assert len(shown["executions"]) == 1 and shown["attempts"] == 1
    result = shown["result"]
    assert result["failure_class"] == "permanent"
    assert result["reason"].startswith("HTTP 401 Unauthorized from the model provider: check the")
    assert "failed (permanent: HTTP 401 Unauthorized" in fleet.ctl("show", str(task)).stdout


def test_agent_failure_after_work_fails_at_once(fleet: Fleet) -> None:
    script = f"{DONE}; exit 4"
    task = fleet.enqueue("gave up", "--", "sh", "-c", script)
    shown = fleet.wait_state(task, "failed")
    assert len(shown["executions"]) == 1
    assert shown["result"]["failure_class"] == "agent"
    assert shown["result"]["reason"] == "the agent exited with status 4 after real work"


def test_retry_runs_a_failed_task_again(fleet: Fleet, tmp_path: Path) -> None:
    task = fleet.enqueue("once broken", *fails_first(tmp_path / "n", "exit 3"))
    shown = fleet.wait_state(task, "failed")
    assert shown["result"]["failure_class"] == "agent"
    assert fleet.json("retry", str(task)) == {"id": task, "state": "queued", "resume": False}
    shown = fleet.wait_state(task, "succeeded", "failed")
    assert shown["state"] == "succeeded"
    assert [e["outcome"] for e in shown["executions"]] == ["failed", "succeeded"]
    assert shown["result"]["final_message"] == "done"
    human = fleet.ctl("retry", str(task)).stdout
    assert human.strip() == f"task {task}: queued again"
    fleet.wait_state(task, "succeeded")


def test_codex_that_cannot_start_is_permanent_and_has_nothing_to_resume(fleet: Fleet) -> None:
    task = fleet.enqueue("no codex here")
    shown = fleet.wait_state(task, "failed")
    assert len(shown["executions"]) == 1
    assert shown["result"]["failure_class"] == "permanent"
    assert shown["result"]["reason"].startswith("the agent could not be started: cannot start")
    refused = fleet.ctl("retry", str(task), "--resume", check=False)
    assert refused.returncode == 1
    assert (
        f"nothing to resume: no previous attempt of task {task} started a Codex thread"
        in refused.stderr
    )
    assert fleet.show(task)["state"] == "failed"


def test_resume_of_a_command_task_is_refused(fleet: Fleet) -> None:
    task = fleet.enqueue("plain", "--", "sh", "-c", "exit 2")
    fleet.wait_state(task, "failed")
    refused = fleet.ctl("retry", str(task), "--resume", check=False)
    assert refused.returncode == 1 and "only codex and claude tasks" in refused.stderr


def test_retry_of_a_running_task_is_refused(fleet: Fleet) -> None:
    task = fleet.enqueue("busy", *SLEEPER)
    wait_for(lambda: fleet.events(task), what="the agent's first event")
    refused = fleet.ctl("retry", str(task), check=False)
    assert refused.returncode == 1
    assert f"task {task} is running" in refused.stderr
    assert f"fleetctl cancel {task}" in refused.stderr
    fleet.ctl("cancel", str(task))
    fleet.wait_state(task, "cancelled")
    assert fleet.json("retry", str(task))["state"] == "queued"
    fleet.wait_state(task, "running")
    fleet.ctl("cancel", str(task))
    fleet.wait_state(task, "cancelled")


def test_retry_of_unknown_task_is_not_found(fleet: Fleet) -> None:
    result = fleet.ctl("retry", "999", check=False)
    assert result.returncode == 1 and "no task 999" in result.stderr


def test_task_waiting_for_a_retry_says_when(slow_fleet: Fleet, tmp_path: Path) -> None:
    argv = fails_first(tmp_path / "n", sample("codex-exec-http500-noretry.jsonl"))
    task = slow_fleet.enqueue("flaky provider", *argv)

    def waiting() -> dict | None:
        shown = slow_fleet.show(task)
        return shown if shown["state"] == "queued" and shown["executions"] else None

    shown = wait_for(waiting, 30, what="the first attempt to fail")
    assert shown["not_before"] is not None
    assert shown["executions"][0]["result"]["failure_class"] == "transient"
    human = slow_fleet.ctl("show", str(task)).stdout
    assert "queued (retry at " in human
    assert "failed (transient: the model provider is overloaded (high demand); retrying at" in human
    refused = slow_fleet.ctl("retry", str(task), check=False)
    assert refused.returncode == 1 and "already queued" in refused.stderr
    listed = json.loads(slow_fleet.ctl("list", "--json").stdout)
    assert listed[0]["not_before"] == shown["not_before"]
    slow_fleet.ctl("cancel", str(task))
    assert slow_fleet.show(task)["state"] == "cancelled"
