"""The app-server conversation, without a process: codex's lines in, fleetd's lines out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleetd.agents.appserver.session import (
    CONTINUE_MARK,
    AppServerSession,
    Phase,
    Policy,
    ThreadSettings,
)
from fleetd.agents.base import ToAgent


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def sent(items: list[ToAgent]) -> list[dict[str, Any]]:
    return [json.loads(item.line) for item in items]


def turn(turn_id: str, status: str = "completed") -> dict[str, Any]:
    return {"id": turn_id, "items": [], "status": status}


def opened(max_turns: int = 1, policy: Policy | None = None) -> AppServerSession:
    """A session whose thread `t1` is open and whose first turn `u1` runs."""
    session = AppServerSession(ThreadSettings(prompt="do it", cwd="/w", max_turns=max_turns))
    if policy is not None:
        session.policy = policy
    [init] = sent(session.opening())
    assert init["method"] == "initialize"
    out = sent(session.on_line(line({"id": 1, "result": {"userAgent": "codex"}})))
    assert [o["method"] for o in out] == ["initialized", "thread/start"]
    [start] = sent(session.on_line(line({"id": 2, "result": {"thread": {"id": "t1"}}})))
    assert start["method"] == "turn/start" and start["params"]["threadId"] == "t1"
    assert session.on_line(line({"id": 3, "result": {"turn": turn("u1", "inProgress")}})) == []
    assert session.phase is Phase.IN_TURN
    return session


def completed(session: AppServerSession, turn_id: str, status: str = "completed") -> list:
    params = {"threadId": "t1", "turn": turn(turn_id, status)}
    return sent(session.on_line(line({"method": "turn/completed", "params": params})))


def agent_says(session: AppServerSession, text: str) -> None:
    item = {"type": "agentMessage", "id": "m", "text": text}
    params = {"item": item, "threadId": "t1", "turnId": "u1", "completedAtMs": 0}
    assert session.on_line(line({"method": "item/completed", "params": params})) == []


def test_one_turn_then_the_conversation_ends() -> None:
    session = opened()
    assert completed(session, "u1") == []
    assert session.finished


def test_it_continues_while_the_agent_says_more_remains_up_to_max_turns() -> None:
    session = opened(max_turns=2)
    agent_says(session, f"half done\n{CONTINUE_MARK}")
    [again] = completed(session, "u1")
    assert again["method"] == "turn/start"
    assert "Continue the task" in again["params"]["input"][0]["text"]
    agent_says(session, f"more\n{CONTINUE_MARK}")
    assert completed(session, "u2") == [] and session.finished  # two turns were the most


def test_a_turn_that_does_not_ask_for_more_is_the_last() -> None:
    session = opened(max_turns=5)
    agent_says(session, "all done")
    assert completed(session, "u1") == [] and session.finished


def test_say_steers_the_current_turn_and_is_held_until_a_turn_has_begun() -> None:
    session = AppServerSession(ThreadSettings(prompt="p", cwd="/w"))
    session.opening()
    session.on_line(line({"id": 1, "result": {}}))
    session.on_line(line({"id": 2, "result": {"thread": {"id": "t1"}}}))
    items, refusal = session.say("early")
    assert (items, refusal) == ([], None)
    [steer] = sent(session.on_line(line({"id": 3, "result": {"turn": turn("u1", "inProgress")}})))
    assert steer["method"] == "turn/steer"
    assert steer["params"] == {
        "expectedTurnId": "u1",
        "input": [{"text": "early", "type": "text"}],
        "threadId": "t1",
    }
    [later] = sent(session.say("later")[0])
    assert later["params"]["input"][0]["text"] == "later"


def test_interrupt_ends_the_turn_and_no_other_starts() -> None:
    session = opened(max_turns=3)
    [stop] = sent(session.interrupt()[0])
    assert stop["method"] == "turn/interrupt"
    assert stop["params"] == {"threadId": "t1", "turnId": "u1"}
    agent_says(session, f"stopping\n{CONTINUE_MARK}")
    assert completed(session, "u1", "interrupted") == [] and session.finished
    assert session.say("too late") == ([], "the agent's conversation has ended")


def test_a_refused_request_ends_the_conversation_with_the_reason() -> None:
    session = AppServerSession(ThreadSettings(prompt="p", cwd="/w"))
    session.opening()
    session.on_line(line({"id": 1, "result": {}}))
    error = {"code": -32600, "message": "model not found"}
    assert session.on_line(line({"id": 2, "error": error})) == []
    assert session.finished
    assert session.failure == "codex app-server refused thread/start: model not found"


@pytest.mark.parametrize(
    ("method", "params", "approve", "result"),
    [
        ("item/commandExecution/requestApproval", {}, True, {"decision": "accept"}),
        ("item/commandExecution/requestApproval", {}, False, {"decision": "decline"}),
        ("item/fileChange/requestApproval", {}, True, {"decision": "accept"}),
        ("item/fileChange/requestApproval", {}, False, {"decision": "decline"}),
        ("execCommandApproval", {}, True, {"decision": "approved"}),
        ("mcpServer/elicitation/request", {}, True, {"action": "decline"}),
        (
            "item/tool/requestUserInput",
            {"questions": [{"id": "q1", "header": "h", "question": "which?"}]},
            True,
            {"answers": {"q1": {"answers": ["decide yourself"]}}},
        ),
    ],
)
def test_requests_are_answered_at_once_by_policy_and_recorded(
    method: str, params: dict[str, Any], approve: bool, result: dict[str, Any]
) -> None:
    policy = Policy(approvals="approve" if approve else "deny", user_input_answer="decide yourself")
    session = opened(policy=policy)
    base = {"threadId": "t1", "turnId": "u1", "itemId": "i1", "startedAtMs": 0, **params}
    [answer] = session.on_line(line({"id": 77, "method": method, "params": base}))
    assert json.loads(answer.line) == {"jsonrpc": "2.0", "id": 77, "result": result}
    record = json.loads(answer.event)
    assert record["type"] == "fleet.sent" and record["answering"] == method


def test_a_request_fleetd_cannot_answer_gets_an_error_not_silence() -> None:
    session = opened()
    [answer] = session.on_line(line({"id": "x", "method": "attestation/generate", "params": {}}))
    reply = json.loads(answer.line)
    assert reply["id"] == "x" and reply["error"]["code"] == -32601


def test_denied_exec_approval_says_why() -> None:
    session = opened()
    [answer] = session.on_line(line({"id": 5, "method": "applyPatchApproval", "params": {}}))
    decision = json.loads(answer.line)["result"]["decision"]
    assert "denies" in decision["denied"]["rejection"]
