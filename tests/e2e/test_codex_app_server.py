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
from tests.support.fleet import running_fleet
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
