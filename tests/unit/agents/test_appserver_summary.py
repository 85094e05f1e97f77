"""A codex app-server run's lines folded into its result: exact tokens, messages, failures."""

from __future__ import annotations

import json
from typing import Any

from fleetd.agents.appserver.summary import AppServerSummary
from shared.models import ExecutionResult, TokenUsage


def feed(summary: AppServerSummary, method: str, params: dict[str, Any]) -> None:
    summary.feed(json.dumps({"method": method, "params": params}).encode(), None)


def usage(total: int, inp: int, out: int) -> dict[str, Any]:
    breakdown = {
        "totalTokens": total,
        "inputTokens": inp,
        "cachedInputTokens": 0,
        "outputTokens": out,
        "reasoningOutputTokens": 0,
    }
    tokens = {"total": breakdown, "last": breakdown}
    return {"threadId": "t", "turnId": "u", "tokenUsage": tokens}


def turn_completed(summary: AppServerSummary, status: str, error: str | None = None) -> None:
    turn = {"id": "u", "items": [], "status": status, "error": error and {"message": error}}
    feed(summary, "turn/completed", {"threadId": "t", "turn": turn})


def test_tokens_are_the_latest_absolute_totals_not_a_sum() -> None:
    summary = AppServerSummary()
    feed(summary, "thread/tokenUsage/updated", usage(30, 20, 10))
    feed(summary, "thread/tokenUsage/updated", usage(62, 45, 17))
    turn_completed(summary, "completed")
    result = summary.into(ExecutionResult())
    assert (result.usage.input_tokens, result.usage.output_tokens) == (45, 17)
    assert result.usage.total_tokens == 62 and result.turns == 1


def test_a_resumed_threads_earlier_tokens_are_left_out() -> None:
    summary = AppServerSummary(TokenUsage(input_tokens=40, output_tokens=20, total_tokens=60))
    feed(summary, "thread/tokenUsage/updated", usage(90, 60, 30))
    turn_completed(summary, "completed")
    assert summary.token_usage().total_tokens == 30


def test_the_last_agent_message_and_commands_are_kept() -> None:
    summary = AppServerSummary()
    for item in (
        {"type": "commandExecution", "id": "c1", "command": "false", "exitCode": 1},
        {"type": "agentMessage", "id": "m1", "text": "first"},
        {"type": "agentMessage", "id": "m2", "text": "last"},
    ):
        feed(summary, "item/completed", {"item": item, "threadId": "t", "turnId": "u"})
    turn_completed(summary, "completed")
    result = summary.into(ExecutionResult())
    assert (result.final_message, result.commands, result.failed_commands) == ("last", 1, 1)
    assert summary.failure() is None


def test_a_failed_turn_or_no_turn_at_all_fails_the_run() -> None:
    failed = AppServerSummary()
    turn_completed(failed, "failed", "unexpected status 401 Unauthorized")
    assert failed.failure() == "the turn failed: unexpected status 401 Unauthorized"
    none = AppServerSummary()
    none.feed(b'{"id": 2, "error": {"code": -1, "message": "no such model"}}', None)
    assert none.failure() == "codex app-server ended before a turn completed: no such model"


def test_an_interrupted_turn_ends_the_run_without_failing_it() -> None:
    summary = AppServerSummary()
    turn_completed(summary, "interrupted")
    result = summary.into(ExecutionResult())
    assert summary.failure() is None and "interrupted by request" in (result.reason or "")


def test_the_thread_id_comes_from_the_open_threads_answer_too() -> None:
    """A resumed thread announces no thread/started: its id is in thread/resume's answer."""
    summary = AppServerSummary()
    summary.feed(b'{"id": 2, "result": {"thread": {"id": "t-9", "preview": ""}}}', None)
    assert summary.thread_id == "t-9"
