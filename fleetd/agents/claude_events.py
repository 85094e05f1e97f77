"""Claude Code's stream-json events (`claude -p --output-format stream-json --verbose`).

One JSON object a line: `system` (subtype `init` with the session id, `api_retry` when a request
to the model failed and is retried), `assistant` and `user` messages (one line per content
block; tool calls and their results), and a last `result` line with the final text, the run's
summed usage, its cost, turns and how it ended. Only the fields read here are declared; msgspec
skips the rest unparsed.
"""

from __future__ import annotations

from typing import Any

import msgspec

from fleetd.agents.base import AgentSummary
from fleetd.agents.codex_events import AgentLine
from fleetd.agents.failures import Verdict, claude_verdict
from shared.models import ExecutionResult, TokenUsage


class ClaudeUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int | None = 0
    cache_creation_input_tokens: int | None = 0


class ClaudeBlock(msgspec.Struct):
    type: str = ""
    id: str | None = None
    text: str | None = None
    name: str | None = None
    tool_use_id: str | None = None
    is_error: bool | None = None


class ClaudeMessage(msgspec.Struct):
    id: str | None = None
    model: str | None = (
        None  # `<synthetic>`: Claude Code's own words (an API error), not the model's
    )
    content: list[ClaudeBlock] | str = []
    usage: ClaudeUsage | None = None


class ClaudeLine(msgspec.Struct):
    type: str = ""
    subtype: str | None = None
    session_id: str | None = None
    message: ClaudeMessage | None = None
    # `result` lines
    is_error: bool = False
    result: str | None = None
    total_cost_usd: float | None = None
    num_turns: int | None = None
    usage: ClaudeUsage | None = None
    api_error_status: int | None = None
    errors: list[Any] | None = None
    # `system`/`api_retry` lines
    attempt: int | None = None
    error_status: int | None = None
    error: Any = None


_decode = msgspec.json.Decoder(ClaudeLine).decode
SHELL_TOOLS = frozenset({"Bash"})
SYNTHETIC_MODEL = "<synthetic>"


class ClaudeSummary(AgentSummary):
    """Folds a Claude Code run's stream-json lines into its result fields."""

    def __init__(self) -> None:
        super().__init__()
        self.result_line: ClaudeLine | None = None
        self.message_usage: dict[str, ClaudeUsage] = {}  # the latest usage of each message id
        self.shell_calls: set[str] = set()
        self.last_text: str | None = None
        self.model: str | None = None

    def feed(self, payload: bytes, parsed: AgentLine | None) -> None:
        try:
            line = _decode(payload)
        except (msgspec.DecodeError, RecursionError):
            return  # not an event of Claude's shape (a stray print); kept as an event anyway
        self.thread_id = line.session_id or self.thread_id
        match line.type:
            case "assistant" | "user" if line.message is not None:
                self._message(line.type, line.message)
            case "system" if line.subtype == "api_retry":
                self._keep_error(_retry_words(line))
            case "result":
                self.result_line = line
                self._keep_error(self._failure_words(line))

    def _message(self, role: str, message: ClaudeMessage) -> None:
        if message.model == SYNTHETIC_MODEL:
            return
        if role == "assistant" and message.id and message.usage is not None:
            # Streamed messages repeat one id per content block: count each message once.
            self.message_usage[message.id] = message.usage
            self.model = message.model or self.model
        for block in message.content if isinstance(message.content, list) else []:
            if block.type == "text" and role == "assistant" and block.text:
                self.work_items += 1
                self.last_text = block.text
            elif block.type == "tool_use":
                self.work_items += 1
                if block.name in SHELL_TOOLS and block.id:
                    self.commands += 1
                    self.shell_calls.add(block.id)
            elif block.type == "tool_result" and block.is_error:
                self.failed_commands += block.tool_use_id in self.shell_calls

    @staticmethod
    def _failure_words(line: ClaudeLine) -> str | None:
        if not line.is_error and line.subtype == "success":
            return None
        words = line.result or "; ".join(str(e) for e in line.errors or []) or str(line.subtype)
        if line.api_error_status:
            words = f"status {line.api_error_status}: {words}"
        return words

    def failure(self) -> str | None:
        """Why the run failed even if it exits with status 0, or None."""
        line = self.result_line
        if line is None:
            return "Claude Code ended without a result line"
        words = self._failure_words(line)
        if words is None:
            return None
        return f"Claude Code {line.subtype}: {words}"

    def verdict(self, exit_code: int | None, signal: int | None) -> Verdict | None:
        line = self.result_line
        return claude_verdict(
            subtype=line.subtype if line else None,
            is_error=line.is_error if line else False,
            api_status=line.api_error_status if line else None,
            message=(self._failure_words(line) or "") if line else "",
            errors=list(self.errors),
            has_result=line is not None,
            exit_code=exit_code,
            signal=signal,
        )

    def token_usage(self) -> TokenUsage:
        """The `result` line's usage (the run's sum), else the sum over assistant messages."""
        line = self.result_line
        if line is not None and line.usage is not None:
            return _token_usage([line.usage])
        return _token_usage(list(self.message_usage.values()))

    def spent(self) -> tuple[TokenUsage, float | None, str | None]:
        line = self.result_line
        cost = line.total_cost_usd if line is not None and line.usage is not None else None
        return self.token_usage(), cost, self.model

    def into(self, result: ExecutionResult) -> ExecutionResult:
        line = self.result_line
        if line is not None and not line.is_error and line.result is not None:
            self.final_message = line.result
        else:
            self.final_message = self.last_text
        self.error = self.failure()
        super().into(result)
        if line is not None:
            result.cost_usd = line.total_cost_usd
            result.turns = line.num_turns
        return result


def _token_usage(usages: list[ClaudeUsage]) -> TokenUsage:
    """Anthropic counts cached input apart from `input_tokens`; fleetd counts it within."""
    total = TokenUsage()
    for usage in usages:
        cached = usage.cache_read_input_tokens or 0
        total.input_tokens += usage.input_tokens + cached + (usage.cache_creation_input_tokens or 0)
        total.cached_input_tokens += cached
        total.output_tokens += usage.output_tokens
    total.total_tokens = total.input_tokens + total.output_tokens
    return total


def _retry_words(line: ClaudeLine) -> str:
    status = f"status {line.error_status} " if line.error_status else ""
    return f"API request failed ({status}{line.error or 'unknown error'}), attempt {line.attempt}"
