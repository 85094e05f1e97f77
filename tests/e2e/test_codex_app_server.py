"""Codex through `codex app-server` (codex.mode = "app-server"): the real binary, JSON-RPC over
its stdio, against the tests' loopback Responses server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.codex_fleet import (
    API_KEY,
    TERMINAL,
    enqueue_codex,
    files_containing,
    fleet_env,
    workdir,
)
from tests.support.fleet import Fleet, running_fleet, wait_for
from tests.support.model_server import ModelServer
from tests.support.requires import needs_codex

pytestmark = needs_codex()


def app_env(tmp_path: Path, server: ModelServer, **settings: str) -> dict[str, str]:
    env = fleet_env(tmp_path, server)
    env["FLEET_CODEX_MODE"] = "app-server"
    env.update({f"FLEET_CODEX_{name.upper()}": value for name, value in settings.items()})
    return env


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def sent(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["payload"] for e in events if e["type"] == "fleet.sent"]


@pytest.mark.timeout(120)
def test_a_run_writes_its_file_and_keeps_every_message_and_the_exact_tokens(
    tmp_path: Path, server: ModelServer
) -> None:
    server.script(
        [server.shell("echo hello > hello.txt"), server.message("Wrote hello.txt", 25, 7)]
    )
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=app_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "create hello.txt", work)
        shown = fleet.wait_state(task, *TERMINAL, timeout=60)
        events = fleet.events(task)
        holding_key = files_containing(fleet.state_dir, API_KEY.encode())
    assert shown["state"] == "succeeded", json.dumps(shown, indent=1)
    assert (work / "hello.txt").read_text() == "hello\n"
    result = shown["result"]
    assert result["final_message"] == "Wrote hello.txt"
    assert result["turns"] == 1 and result["commands"] == 1
    # Two model requests (20/10, then 25/7), from thread/tokenUsage/updated's totals.
    usage = result["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (45, 17, 62)
    kinds = types_of(events)
    for kind in ("rpc.response", "thread/started", "turn/started", "item/completed"):
        assert kind in kinds
    assert kinds.count("thread/tokenUsage/updated") == 2
    assert "turn/completed" in kinds
    methods = [s["message"].get("method") for s in sent(events)]
    assert methods[:4] == ["initialize", "initialized", "thread/start", "turn/start"]
    assert result["thread_id"] and result["session_file"]
    assert holding_key == []


@pytest.mark.timeout(120)
def test_a_refused_request_fails_the_run_saying_why(tmp_path: Path, server: ModelServer) -> None:
    server.script([server.http_error(401, "bad key")])
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=app_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "anything", work, "--max-attempts", "1")
        shown = fleet.wait_state(task, *TERMINAL, timeout=60)
    assert shown["state"] == "failed", shown
    assert shown["result"]["failure_class"] == "permanent", shown["result"]
    assert "401" in (shown["result"]["error"] or "") or "nauthorized" in shown["result"]["error"]


def wait_for_command_started(fleet: Fleet, task: int) -> None:
    def started() -> bool:
        return any(
            e["type"] == "item/started"
            and e["payload"]["params"]["item"]["type"] == "commandExecution"
            for e in fleet.events(task)
        )

    wait_for(started, 60, what="the agent's command to start")


@pytest.mark.timeout(120)
def test_a_task_continues_for_more_turns_while_the_agent_says_more_remains(
    tmp_path: Path, server: ModelServer
) -> None:
    server.script(
        [
            server.message("part one done\nFLEET: CONTINUE"),
            server.message("all done\nFLEET: DONE"),
            server.message("a third turn nobody asked for"),
        ]
    )
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=app_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "do it in parts", work, "--max-turns", "3")
        shown = fleet.wait_state(task, *TERMINAL, timeout=60)
    assert shown["state"] == "succeeded", shown
    assert shown["result"]["turns"] == 2
    assert shown["result"]["final_message"] == "all done\nFLEET: DONE"
    assert len(server.requests) == 2, "no third turn after FLEET: DONE"
    first, second = (" ".join(server.user_texts(r.body)) for r in server.requests)
    assert "do it in parts" in first and "FLEET: CONTINUE" in first
    assert "Continue the task from where you stopped" in second


@pytest.mark.timeout(120)
def test_say_steers_the_running_turn_and_the_model_sees_it_next(
    tmp_path: Path, server: ModelServer
) -> None:
    server.script([server.shell("sleep 3; echo slept"), server.message("painted it blue")])
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=app_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "paint the shed", work)
        wait_for_command_started(fleet, task)
        said = fleet.ctl("say", str(task), "use blue paint, not red")
        assert "message sent to its agent" in said.stdout
        shown = fleet.wait_state(task, *TERMINAL, timeout=60)
        events = fleet.events(task)
    assert shown["state"] == "succeeded", shown
    assert "use blue paint, not red" in " ".join(server.user_texts(server.requests[1].body))
    assert "use blue paint, not red" not in json.dumps(server.requests[0].body)
    kinds = types_of(events)
    assert "fleet.say" in kinds
    steer = [s for s in sent(events) if s["message"].get("method") == "turn/steer"]
    assert steer and steer[0]["message"]["params"]["input"][0]["text"] == "use blue paint, not red"


@pytest.mark.timeout(120)
def test_interrupt_ends_the_turn_and_the_task_ends_with_what_it_has(
    tmp_path: Path, server: ModelServer
) -> None:
    server.script([server.shell("sleep 60"), server.message("never asked for")])
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=app_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "wait a long time", work, "--max-turns", "5")
        wait_for_command_started(fleet, task)
        fleet.ctl("interrupt", str(task))
        shown = fleet.wait_state(task, *TERMINAL, timeout=60)
        events = fleet.events(task)
    assert shown["state"] == "succeeded", shown
    result = shown["result"]
    assert result["exit_code"] == 0 and result["signal"] is None, "codex ended by itself"
    assert "interrupted by request" in (result["reason"] or "")
    assert len(server.requests) == 1, "no new turn after the interrupt"
    methods = [s["message"].get("method") for s in sent(events)]
    assert "turn/interrupt" in methods
    completed = [e for e in events if e["type"] == "turn/completed"]
    assert completed[-1]["payload"]["params"]["turn"]["status"] == "interrupted"


@pytest.mark.timeout(120)
def test_say_to_a_task_that_is_not_running_is_refused(tmp_path: Path, server: ModelServer) -> None:
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=app_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "quick", work)
        fleet.wait_state(task, *TERMINAL, timeout=60)
        refused = fleet.ctl("say", str(task), "too late", check=False)
        missing = fleet.ctl("interrupt", "999", check=False)
    assert refused.returncode == 1 and "not running" in refused.stderr, refused
    assert missing.returncode == 1 and "no task 999" in missing.stderr, missing


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("policy", "written"), [("approve", True), ("deny", False)])
def test_approval_requests_are_answered_by_policy_and_recorded(
    tmp_path: Path, server: ModelServer, policy: str, written: bool
) -> None:
    """Under approval_policy = untrusted codex asks before running a command; fleetd answers at
    once from codex.approvals, so the run never waits for a person."""
    server.script([server.shell("echo yes > asked.txt"), server.message("finished")])
    work = workdir(tmp_path, "work")
    env = app_env(tmp_path, server, approval_policy="untrusted", approvals=policy)
    with running_fleet("--workers", "1", env=env) as fleet:
        task = enqueue_codex(fleet, "write asked.txt", work)
        shown = fleet.wait_state(task, *TERMINAL, timeout=60)
        events = fleet.events(task)
    assert shown["state"] == "succeeded", shown
    answers = [s for s in sent(events) if s.get("answering")]
    assert [a["answering"] for a in answers] == ["item/commandExecution/requestApproval"]
    decision = answers[0]["message"]["result"]["decision"]
    assert decision == ("accept" if written else "decline")
    assert (work / "asked.txt").exists() is written
