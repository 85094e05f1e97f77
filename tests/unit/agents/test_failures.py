"""Failure classes from real `codex exec --json` samples (tests/data/codex) and from messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.agents.base import MAX_ERRORS, AgentSummary
from fleetd.agents.failures import classify_failure, classify_result
from fleetd.worker.output import classify
from shared.models import ExecutionResult

# Copies of /work/shared/reference/*.jsonl: real output of codex-cli 0.169.0.
SAMPLES = Path(__file__).resolve().parents[2] / "data" / "codex"


def summarise(name: str) -> AgentSummary:
    summary = AgentSummary()
    for line in (SAMPLES / name).read_bytes().splitlines():
        _, _, parsed = classify(line)
        assert parsed is not None
        summary.observe(parsed)
    return summary


def classified(
    name: str, exit_code: int | None, stderr: list[str] | None = None
) -> ExecutionResult:
    summary = summarise(name)
    result = summary.into(ExecutionResult(exit_code=exit_code))
    return classify_result(result, summary, stderr or [], None)


# --- the real samples ----------------------------------------------------------------------


def test_http500_sample_is_transient() -> None:
    result = classified("codex-exec-http500-noretry.jsonl", 1)
    assert result.failure_class == "transient"
    assert result.reason == "the model provider is overloaded (high demand)"


def test_http401_sample_is_permanent_with_advice() -> None:
    result = classified("codex-exec-http401-retries.jsonl", 1)
    assert result.failure_class == "permanent"
    assert result.reason is not None
    assert result.reason.startswith("HTTP 401 Unauthorized from the model provider: check the API")


def test_warning_items_are_not_errors() -> None:
    # Every sample opens with an `error` item ("Model metadata ... not found"): a warning.
    for name in ("codex-exec-ok.jsonl", "codex-exec-sigterm.jsonl"):
        summary = summarise(name)
        assert list(summary.errors) == []
    assert summarise("codex-exec-sigterm.jsonl").work_items == 0


def test_http401_sample_keeps_every_error_event_in_order() -> None:
    errors = list(summarise("codex-exec-http401-retries.jsonl").errors)
    assert len(errors) == 7  # five "Reconnecting...", the error, the turn.failed
    assert errors[0].startswith("Reconnecting... 1/5")
    assert errors[-1].startswith("unexpected status 401 Unauthorized")


def test_ok_sample_failing_afterwards_is_an_agent_failure() -> None:
    result = classified("codex-exec-ok.jsonl", 1, ["connection refused"])
    assert result.failure_class == "agent"
    assert result.reason == "the agent exited with status 1 after real work (1 command run)"


def test_sigterm_sample_without_work_is_an_agent_failure_with_its_status() -> None:
    result = classified("codex-exec-sigterm.jsonl", 143)
    assert (result.failure_class, result.reason) == ("agent", "the agent exited with status 143")


def test_errors_are_bounded() -> None:
    summary = AgentSummary()
    line = b'{"type":"error","message":"' + b"x" * 5000 + b'"}'
    for _ in range(MAX_ERRORS + 5):
        summary.observe(classify(line)[2])  # type: ignore[arg-type]
    assert len(summary.errors) == MAX_ERRORS
    assert all(len(message) == 2000 for message in summary.errors)


# --- messages ------------------------------------------------------------------------------

TRANSIENT = [
    ("unexpected status 500 Internal Server Error: boom", "HTTP 500 Internal Server Error"),
    ("unexpected status 503 Service Unavailable", "HTTP 503 Service Unavailable"),
    ("unexpected status 429 Too Many Requests: slow down", "HTTP 429 Too Many Requests"),
    ("Rate limit reached for gpt-5 in organization org-x", "rate limited"),
    ("stream disconnected before completion: stream closed", "dropped mid-stream"),
    (
        "error sending request for url (http://127.0.0.1:1/v1/responses): client error "
        "(Connect): tcp connect error: Connection refused (os error 111)",
        "could not reach",
    ),
    ("Connection reset by peer (os error 104)", "could not reach"),
    (
        "error sending request: dns error: failed to lookup address information: "
        "Temporary failure in name resolution",
        "DNS",
    ),
    ("request timed out", "timed out"),
    ("idle timeout waiting for SSE", "timed out"),
    ("We’re currently experiencing high demand, which may cause temporary errors.", "overloaded"),
]

PERMANENT = [
    ("unexpected status 401 Unauthorized: bad key", "check the API key"),
    ("Incorrect API key provided: sk-****", "check the API key"),
    ("Missing environment variable: `CODEX_API_KEY`.", "check the API key"),
    ("unexpected status 403 Forbidden", "HTTP 403 Forbidden"),
    ("unexpected status 400 Bad Request: Unsupported parameter", "HTTP 400 Bad Request"),
    ("unexpected status 404 Not Found", "check the model name"),
    ("The model `gpt-9` does not exist or you do not have access to it.", "unknown model"),
    ("invalid_request_error: bad value", "configuration or arguments"),
    ("unexpected status 429 Too Many Requests: You exceeded your current quota", "quota"),
    ("Quota exceeded. Check your plan and billing details.", "quota"),
]


@pytest.mark.parametrize(("message", "words"), TRANSIENT)
def test_transient_messages(message: str, words: str) -> None:
    kind, reason = classify_failure(errors=[message], exit_code=1)
    assert kind == "transient"
    assert words in reason


@pytest.mark.parametrize(("message", "words"), PERMANENT)
def test_permanent_messages(message: str, words: str) -> None:
    kind, reason = classify_failure(errors=[message], exit_code=1)
    assert kind == "permanent"
    assert words in reason


def test_the_latest_error_that_explains_itself_wins() -> None:
    server, auth = "unexpected status 500 Internal Server Error", "unexpected status 401"
    assert classify_failure(errors=[server, auth], exit_code=1)[0] == "permanent"
    assert classify_failure(errors=[auth, server], exit_code=1)[0] == "transient"
    assert classify_failure(errors=[server, "something odd"], exit_code=1)[0] == "transient"


def test_provider_errors_win_over_real_work() -> None:
    kind, _ = classify_failure(
        errors=["stream disconnected before completion"], exit_code=1, commands=4, worked=True
    )
    assert kind == "transient"


def test_unexplained_failure_after_work_is_the_agents() -> None:
    kind, reason = classify_failure(errors=["it broke"], exit_code=2, commands=3, worked=True)
    assert (kind, reason) == (
        "agent",
        "the agent exited with status 2 after real work (3 commands run)",
    )


# --- exit status and stderr ----------------------------------------------------------------


def test_start_failure_is_permanent() -> None:
    kind, reason = classify_failure(
        errors=[], exit_code=None, start_error="cannot start agent 'x': No such file"
    )
    assert (kind, reason) == (
        "permanent",
        "the agent could not be started: cannot start agent 'x': No such file",
    )


def test_command_not_found_is_permanent() -> None:
    kind, reason = classify_failure(errors=[], exit_code=127, stderr_tail="sh: 1: nope: not found")
    assert kind == "permanent" and "not found or not executable" in reason


def test_argument_errors_on_stderr_are_permanent() -> None:
    stderr = "error: unexpected argument '--bogus' found\n\nUsage: codex exec [OPTIONS] [PROMPT]"
    assert classify_failure(errors=[], exit_code=2, stderr_tail=stderr)[0] == "permanent"
    config = "Error loading config.toml: unknown variant `fast`, expected one of `low`"
    assert classify_failure(errors=[], exit_code=1, stderr_tail=config)[0] == "permanent"


def test_network_errors_on_stderr_are_transient_when_nothing_else_explains() -> None:
    stderr = "2026-11-25T20:00:00Z ERROR codex: stream disconnected before completion"
    assert classify_failure(errors=[], exit_code=1, stderr_tail=stderr)[0] == "transient"


def test_stderr_does_not_override_real_work() -> None:
    kind, _ = classify_failure(
        errors=[], exit_code=1, worked=True, stderr_tail="ERROR: connection refused"
    )
    assert kind == "agent"


def test_plain_exit_status_is_an_agent_failure() -> None:
    assert classify_failure(errors=[], exit_code=7, stderr_tail="oops") == (
        "agent",
        "the agent exited with status 7",
    )


def test_signal_is_named() -> None:
    assert classify_failure(errors=[], exit_code=None, signal=9) == (
        "agent",
        "the agent was killed by SIGKILL",
    )
