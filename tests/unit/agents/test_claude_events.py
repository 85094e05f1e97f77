"""ClaudeSummary and the Claude failure classes over real Claude Code 2.1.332 stream-json output.

tests/data/claude/*.jsonl: stdout of the real CLI (`claude -p --output-format stream-json
--verbose`) against tests/support/anthropic_server.py, with CLAUDE_CODE_MAX_RETRIES=1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetd.agents.claude_events import ClaudeSummary
from fleetd.agents.failures import classify_result
from fleetd.worker.output import classify
from shared.models import ExecutionResult, TokenUsage

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "claude"


def summarise(name: str, lines: int | None = None) -> ClaudeSummary:
    summary = ClaudeSummary()
    for line in (REFERENCE / name).read_bytes().splitlines()[:lines]:
        kind, flags, parsed = classify(line)
        assert flags == 0 and kind in ("system", "assistant", "user", "result"), (kind, flags)
        summary.feed(line, parsed)
    return summary


def finished(summary: ClaudeSummary, exit_code: int | None = 1) -> ExecutionResult:
    result = summary.into(ExecutionResult(exit_code=exit_code))
    if exit_code != 0 or summary.failure() is not None:
        classify_result(result, summary, [], None)
    return result


def test_a_finished_run_gives_its_answer_usage_cost_turns_and_session() -> None:
    summary = summarise("claude-ok.jsonl")
    assert summary.failure() is None
    result = finished(summary, exit_code=0)
    assert result.final_message == "wrote it"
    # The result line's sum, not the assistant lines' (they carry message_start's partial usage).
    assert result.usage == TokenUsage(input_tokens=40, output_tokens=20, total_tokens=60)
    assert result.cost_usd == pytest.approx(0.00056)
    assert result.turns == 2
    assert result.thread_id == "c82133b8-8a85-4e31-aa53-fdafa26fe546"
    assert (result.commands, result.failed_commands) == (1, 0)
    assert result.failure_class is None and result.error is None


def test_without_a_result_line_usage_is_summed_once_per_message() -> None:
    summary = summarise("claude-ok.jsonl", lines=-1)
    result = finished(summary)
    assert result.usage.input_tokens == 40  # two messages of 20, each counted once
    assert result.error == "Claude Code ended without a result line"
    assert result.failure_class == "agent"
    assert "without a result line" in (result.reason or "")
    assert result.final_message == "wrote it"


def test_a_stream_cut_after_a_retry_says_what_the_retry_said() -> None:
    summary = summarise("claude-429.jsonl", lines=2)  # init and api_retry, then nothing
    result = finished(summary, exit_code=None)
    assert result.failure_class == "transient"
    assert "HTTP 429" in (result.reason or "") and "without a result line" in (result.reason or "")


@pytest.mark.parametrize(
    ("name", "kind", "words"),
    [
        ("claude-429.jsonl", "transient", "HTTP 429"),
        ("claude-500.jsonl", "transient", "HTTP 500"),
        ("claude-cut.jsonl", "transient", "could not reach the model provider"),
        ("claude-401.jsonl", "permanent", "ANTHROPIC_API_KEY"),
        ("claude-maxturns.jsonl", "agent", "claude.max_turns"),
    ],
)
def test_failure_classes_from_the_result_line(name: str, kind: str, words: str) -> None:
    summary = summarise(name)
    result = finished(summary)
    assert (result.failure_class, words in (result.reason or "")) == (kind, True), result.reason
    assert result.error is not None and result.error.startswith("Claude Code ")


def test_a_rate_limit_reported_as_success_with_status_0_is_a_transient_failure() -> None:
    """anthropics/claude-code-action#1720: `subtype: success, is_error: true`."""
    summary = summarise("claude-429.jsonl")
    assert summary.failure() is not None
    result = finished(summary, exit_code=0)
    assert result.failure_class == "transient"
    assert result.final_message is None  # the error text is not the agent's answer


def test_budget_and_execution_errors() -> None:
    for subtype, kind in (
        ("error_max_budget_usd", "permanent"),
        ("error_during_execution", "agent"),
    ):
        summary = ClaudeSummary()
        line = {"type": "result", "subtype": subtype, "is_error": True, "errors": ["boom"]}
        summary.feed(json.dumps(line).encode(), None)
        result = finished(summary)
        assert result.failure_class == kind, result.reason


def test_lines_of_other_shapes_are_skipped() -> None:
    summary = ClaudeSummary()
    for line in (b"plain text", b"[1, 2]", b'{"type": "assistant", "message": 3}', b"{"):
        summary.feed(line, None)
    assert summary.work_items == 0 and summary.failure() is not None
