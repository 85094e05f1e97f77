"""AgentSummary over real `codex exec --json` output (tests/data/codex: copies of the reference)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.agents.base import AgentSummary
from fleetd.agents.codex_events import AgentLine
from fleetd.worker.output import classify
from shared.models import ExecutionResult, TokenUsage

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "codex"
HIGH_DEMAND = "We’re currently experiencing high demand, which may cause temporary errors."
UNAUTHORIZED = (
    "unexpected status 401 Unauthorized: bad key, url: http://127.0.0.1:18092/v1/responses"
)


def summarise(name: str) -> AgentSummary:
    path = REFERENCE / name
    summary = AgentSummary()
    for line in path.read_bytes().splitlines():
        kind, flags, parsed = classify(line)
        assert flags == 0, f"{name}: {line!r} classified {kind} with flags {flags}"
        assert parsed is not None
        summary.observe(parsed)
    return summary


def test_ok_sample_summary() -> None:
    summary = summarise("codex-exec-ok.jsonl")
    assert summary.final_message == "Done: created hello.txt"
    assert summary.token_usage() == TokenUsage(input_tokens=20, output_tokens=10, total_tokens=30)
    assert (summary.commands, summary.failed_commands) == (1, 0)
    assert summary.thread_id == "01a20f7c-d85a-7150-ad74-23f8956865c1"
    assert summary.error is None


def test_http500_sample_reports_the_error() -> None:
    summary = summarise("codex-exec-http500-noretry.jsonl")
    assert summary.error == HIGH_DEMAND
    assert summary.final_message is None
    assert summary.thread_id == "01a20f80-38f9-74b2-bc08-2714fce759ba"
    assert summary.commands == 0


def test_http401_sample_keeps_the_final_error_not_a_retry() -> None:
    summary = summarise("codex-exec-http401-retries.jsonl")
    assert summary.error == UNAUTHORIZED


def test_sigterm_sample_counts_no_unfinished_command() -> None:
    summary = summarise("codex-exec-sigterm.jsonl")
    assert (summary.commands, summary.failed_commands) == (0, 0)
    assert summary.final_message is None
    assert summary.error is None
    assert summary.thread_id == "01a20f7f-3995-7b33-bed8-b8cfd2a08ae6"


def test_ok_sample_lines_have_codex_types() -> None:
    path = REFERENCE / "codex-exec-ok.jsonl"
    if not path.is_file():
        pytest.skip(f"reference sample {path} is missing")
    kinds = [classify(line)[0] for line in path.read_bytes().splitlines()]
    assert kinds == [
        "thread.started",
        "item.completed",
        "turn.started",
        "item.started",
        "item.completed",
        "item.completed",
        "turn.completed",
    ]


def observe_all(*lines: bytes) -> AgentSummary:
    summary = AgentSummary()
    for line in lines:
        parsed = classify(line)[2]
        assert parsed is not None
        summary.observe(parsed)
    return summary


def test_failed_commands_by_exit_code_or_status() -> None:
    summary = observe_all(
        b'{"type":"item.completed","item":{"type":"command_execution","exit_code":2}}',
        b'{"type":"item.completed","item":{"type":"command_execution","status":"failed"}}',
        b'{"type":"item.completed","item":{"type":"command_execution","exit_code":0}}',
    )
    assert (summary.commands, summary.failed_commands) == (3, 2)


def test_usage_is_the_latest_running_total_not_a_sum_over_turns() -> None:
    """codex's `turn.completed.usage` is the thread's total so far: summing double-counts."""
    first = b'{"type":"turn.completed","usage":{"input_tokens":5,"output_tokens":3}}'
    later = (
        b'{"type":"turn.completed","usage":{"input_tokens":12,"cached_input_tokens":4,'
        b'"output_tokens":7,"reasoning_output_tokens":2}}'
    )
    summary = observe_all(first, later)
    assert summary.token_usage() == TokenUsage(
        input_tokens=12,
        cached_input_tokens=4,
        output_tokens=7,
        reasoning_output_tokens=2,
        total_tokens=19,
    )


def test_a_resumed_runs_usage_leaves_out_what_the_thread_had_used_before() -> None:
    summary = observe_all(
        b'{"type":"turn.completed","usage":{"input_tokens":30,"output_tokens":9}}'
    )
    summary.baseline = TokenUsage(input_tokens=20, output_tokens=4, total_tokens=24)
    result = summary.into(ExecutionResult())
    assert (result.usage.input_tokens, result.usage.output_tokens) == (10, 5)
    assert result.usage.total_tokens == 15
    assert result.thread_usage is not None and result.thread_usage.total_tokens == 39


def test_last_agent_message_is_the_final_one() -> None:
    summary = observe_all(
        b'{"type":"item.completed","item":{"type":"agent_message","text":"first"}}',
        b'{"type":"item.completed","item":{"type":"agent_message","text":"last"}}',
    )
    assert summary.final_message == "last"


def test_thread_started_without_id_keeps_the_known_one() -> None:
    summary = AgentSummary()
    summary.observe(AgentLine(type="thread.started", thread_id="t-1"))
    summary.observe(AgentLine(type="thread.started"))
    assert summary.thread_id == "t-1"


def test_into_fills_result_and_keeps_an_earlier_error() -> None:
    summary = summarise("codex-exec-ok.jsonl")
    summary.error = "agent error"
    result = summary.into(ExecutionResult(exit_code=0, error="timed out"))
    assert result.final_message == "Done: created hello.txt"
    assert (result.commands, result.usage.total_tokens) == (1, 30)
    assert result.thread_id == "01a20f7c-d85a-7150-ad74-23f8956865c1"
    assert result.error == "timed out"


def test_into_takes_the_agent_error_when_result_has_none() -> None:
    summary = summarise("codex-exec-http500-noretry.jsonl")
    assert summary.into(ExecutionResult(exit_code=1)).error == HIGH_DEMAND
