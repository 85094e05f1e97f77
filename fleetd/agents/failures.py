"""Why a run failed, in one of three classes, from what it printed and how it ended.

- transient: the model provider or the network had a bad moment (HTTP 5xx, rate limits,
  timeouts, refused or reset connections, DNS); the queue retries it after a backoff.
- permanent: retrying cannot help (bad credentials, a bad request, an unknown model, an invalid
  configuration or argument, an agent that cannot start); it fails at once.
- agent: the agent itself gave up or crashed (a non-zero exit after real work, or any exit
  we cannot explain); it fails at once, with its exit status.

Pure functions: no process, no clock, no I/O.
"""

from __future__ import annotations

import http
import re
import signal as signals
from collections.abc import Iterable, Sequence

from fleetd.agents.base import AgentSummary
from shared.models import ExecutionResult, FailureClass

Verdict = tuple[FailureClass, str]

# `unexpected status 401 Unauthorized`, `HTTP 503`, `status code: 429`, `status=500`.
_STATUS = re.compile(r"\b(?:status(?:\s+code)?|http)\s*[:=]?\s*([1-5]\d\d)\b", re.IGNORECASE)


def _rule(kind: FailureClass, reason: str, *phrases: str) -> tuple[FailureClass, re.Pattern, str]:
    return kind, re.compile("|".join(phrases), re.IGNORECASE), reason


_QUOTA = r"quota|billing|usage limit"
_QUOTA_REASON = "the account's quota or usage limit is used up: check the plan and billing"

# The first rule that matches wins, so the specific ones come first.
_RULES = [
    _rule("permanent", _QUOTA_REASON, _QUOTA),
    _rule(
        "permanent",
        "the model provider refused the credentials: check the API key "
        "(OPENAI_API_KEY / CODEX_API_KEY) or the Codex login",
        r"invalid[ _]api[ _]key|incorrect api key|unauthori[sz]ed|authentication",
        r"missing (?:environment variable|api key)|not logged in",
    ),
    _rule("permanent", "access denied: check the key's permissions", r"forbidden"),
    _rule(
        "permanent",
        "unknown model: check the task's --model or codex.model",
        r"model[_ ]not[_ ]found|unknown model|model \S+ does not exist|unsupported model",
        r"model is not supported",
    ),
    _rule(
        "permanent",
        "the agent rejected its configuration or arguments: check the task's options "
        "and the codex settings",
        r"invalid[_ ]request|bad request|invalid (?:config|configuration|value|argument)",
        r"error loading config|unknown (?:variant|field|feature)|unexpected argument",
        r"unrecognized (?:option|argument|subcommand)|^usage: ",
    ),
    _rule(
        "transient",
        "the model provider is overloaded (high demand)",
        r"high demand|overloaded|server is busy",
    ),
    _rule("transient", "rate limited by the model provider", r"rate[ _-]?limit|too many requests"),
    _rule(
        "transient",
        "the connection to the model provider dropped mid-stream",
        r"stream disconnected|stream closed|stream error|unexpected eof",
    ),
    _rule(
        "transient",
        "could not resolve the model provider's host name (DNS)",
        r"dns error|failed to lookup address|name or service not known",
        r"temporary failure in name resolution|could not resolve host",
    ),
    _rule(
        "transient",
        "could not reach the model provider (connection refused, reset or closed)",
        r"connection (?:refused|reset|closed|aborted)|broken pipe|unreachable",
        r"connection to the api was lost|econn(?:reset|refused|aborted)",
        r"error sending request|connect error|tls handshake",
    ),
    _rule(
        "transient",
        "the request to the model provider timed out",
        r"timed out|timeout|deadline exceeded",
    ),
    _rule(
        "transient",
        "the model provider had a server error",
        r"internal server error|bad gateway|service unavailable|server error",
    ),
]
_QUOTA_RE = re.compile(_QUOTA, re.IGNORECASE)

_STATUS_REASONS: dict[int, str] = {
    400: "check the task's model and options",
    401: "check the API key (OPENAI_API_KEY / CODEX_API_KEY) or the Codex login",
    403: "the key has no access to this model or project",
    404: "check the model name and the provider's base URL",
    408: "the request timed out",
    409: "a conflicting request; retrying",
    429: "rate limited",
}


def classify_failure(
    *,
    errors: Sequence[str],
    exit_code: int | None,
    signal: int | None = None,
    commands: int = 0,
    worked: bool = False,
    stderr_tail: str = "",
    start_error: str | None = None,
) -> Verdict:
    """The class of a failed run and the reason in words.

    `errors`: the messages of the agent's `error` and `turn.failed` events, oldest first
    (not `error` items, which are warnings). `worked`: the agent did real work (ran
    commands, wrote messages, changed files).
    """
    if start_error is not None:
        return "permanent", f"the agent could not be started: {start_error}"
    verdict = _from_messages(reversed(errors))
    if verdict is not None:
        return verdict
    ended = _how_it_ended(exit_code, signal)
    if worked:
        return "agent", f"the agent {ended} after real work{_work(commands)}"
    if exit_code in (126, 127):
        return "permanent", f"the agent {ended}: its command was not found or not executable"
    verdict = _from_messages(reversed(stderr_tail.splitlines()))
    if verdict is not None:
        return verdict
    return "agent", f"the agent {ended}"


def classify_result(
    result: ExecutionResult,
    summary: AgentSummary,
    stderr_tail: Iterable[str],
    start_error: str | None,
) -> ExecutionResult:
    """Set `failure_class` and `reason` of a failed run's result."""
    verdict = None if start_error else summary.verdict(result.exit_code, result.signal)
    if verdict is None:
        verdict = classify_failure(
            errors=summary.errors,
            exit_code=result.exit_code,
            signal=result.signal,
            commands=summary.commands,
            worked=summary.work_items > 0,
            stderr_tail="\n".join(stderr_tail),
            start_error=start_error,
        )
    result.failure_class, result.reason = verdict
    # Both the 429 reason and the rate-limit rule's say so; the broker holds the agent's kind.
    result.rate_limited = verdict[0] == "transient" and "rate limited" in verdict[1]
    return result


CLAUDE_CREDENTIALS = (
    "the model provider refused the credentials: check ANTHROPIC_API_KEY, "
    "CLAUDE_CODE_OAUTH_TOKEN or ANTHROPIC_AUTH_TOKEN (kept in worker.env_allow) "
    "or the Claude login"
)


def claude_verdict(
    *,
    subtype: str | None,
    is_error: bool,
    api_status: int | None,
    message: str,
    errors: Sequence[str],
    has_result: bool,
    exit_code: int | None,
    signal: int | None,
) -> Verdict | None:
    """The class of a failed Claude Code run from its `result` line (or its absence).

    `errors`: what its `api_retry` events and result said, oldest first. A rate limit is
    reported as `subtype: success, is_error: true` (anthropics/claude-code-action#1720): the
    status decides, not the subtype. None: nothing Claude-specific to say.
    """
    if not has_result:
        ended = f"Claude Code {_how_it_ended(exit_code, signal)} without a result line"
        found = _from_messages(reversed(errors))
        if found is not None:
            return found[0], f"{_claude_reason(found)} (then {ended})"
        return "agent", ended
    if subtype == "error_max_turns":
        return "agent", "the agent used up its turns before finishing: raise claude.max_turns"
    if subtype == "error_max_budget_usd":
        return "permanent", "the run reached its spending limit: raise claude.max_budget_usd"
    found = _from_messages([message]) if message else None
    if found is None and api_status is None:
        found = _from_messages(reversed(errors))
    if found is not None:
        return found[0], _claude_reason(found)
    if subtype == "error_during_execution":
        return "agent", f"Claude Code failed during execution: {message[:300]}"
    if is_error:
        return "agent", f"Claude Code reported an error: {message[:300]}"
    return None


def _claude_reason(verdict: Verdict) -> str:
    """Codex's credential advice, said for Claude Code."""
    kind, reason = verdict
    if kind != "permanent" or not ("credentials" in reason or "HTTP 401" in reason):
        return reason
    if reason.startswith("HTTP"):
        return f"{reason.split(':')[0]}: {CLAUDE_CREDENTIALS}"
    return CLAUDE_CREDENTIALS


def _from_messages(messages: Iterable[str]) -> Verdict | None:
    """The verdict of the latest message that explains itself, or None."""
    for message in messages:
        verdict = _from_status(message) or _from_words(message)
        if verdict is not None:
            return verdict
    return None


def _from_status(message: str) -> Verdict | None:
    found = _STATUS.search(message)
    if found is None:
        return None
    code = int(found.group(1))
    if code < 400:
        return None
    phrase = _phrase(code)
    if code >= 500:
        return "transient", f"HTTP {code}{phrase} from the model provider"
    advice = _STATUS_REASONS.get(code, "the provider refused the request")
    kind: FailureClass = "transient" if code in (408, 409, 429) else "permanent"
    if code == 429 and _QUOTA_RE.search(message):
        return "permanent", _QUOTA_REASON  # a 429 for a used-up quota is not worth a retry
    return kind, f"HTTP {code}{phrase} from the model provider: {advice}"


def _from_words(message: str) -> Verdict | None:
    for kind, pattern, reason in _RULES:
        if pattern.search(message):
            return kind, reason
    return None


def _phrase(code: int) -> str:
    try:
        return " " + http.HTTPStatus(code).phrase
    except ValueError:
        return ""


def _how_it_ended(exit_code: int | None, signal: int | None) -> str:
    if signal is not None:
        try:
            name = signals.Signals(signal).name
        except ValueError:
            name = f"signal {signal}"
        return f"was killed by {name}"
    if exit_code is None:
        return "ended without an exit status"
    return f"exited with status {exit_code}"


def _work(commands: int) -> str:
    if commands == 0:
        return ""
    return f" ({commands} command{'s' if commands != 1 else ''} run)"
