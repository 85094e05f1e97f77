"""Folds a `codex app-server` run's JSON-RPC lines into its result.

Tokens are exact: `thread/tokenUsage/updated` carries the thread's absolute totals, so the
latest one is the thread's, and what the thread had used before this run (a resumed
attempt's) is taken off. The final message is the last agent message; a failed turn, an
error the server will not retry, or a refused request fails the run.
"""

from __future__ import annotations

import contextlib

import msgspec

from fleetd.agents.appserver import protocol as p
from fleetd.agents.appserver.session import Envelope, decode_envelope
from fleetd.agents.base import AgentSummary
from fleetd.agents.codex_events import AgentLine
from shared.models import ExecutionResult, TokenUsage


class AppServerSummary(AgentSummary):
    """Reads every line codex app-server prints (events of every kind are stored anyway)."""

    def __init__(self, baseline: TokenUsage | None = None) -> None:
        super().__init__(baseline=baseline)
        self.turns = 0
        self.last_status: str | None = None
        self.interrupted = False
        self.refusal: str | None = None

    def feed(self, payload: bytes, parsed: AgentLine | None) -> None:
        message = decode_envelope(payload)
        if message is None:
            return
        if message.method is None:
            self._response(message)
            return
        if not message.params or message.id is not None:
            return
        # Another shape than the pinned schema's is kept as an event, not read.
        with contextlib.suppress(msgspec.ValidationError):
            self._notification(message.method, message.params)

    def _response(self, message: Envelope) -> None:
        if message.error is not None:
            words = message.error.get("message") if isinstance(message.error, dict) else None
            self.refusal = str(words or message.error)
            self._keep_error(self.refusal)
        elif message.result and b'"thread"' in bytes(message.result):
            # thread/start's or thread/resume's answer (a resumed thread has no thread/started)
            with contextlib.suppress(msgspec.ValidationError):
                opened = msgspec.json.decode(message.result, type=p.ThreadStartResponse)
                self.thread_id = opened.thread.id

    def _notification(self, method: str, params: msgspec.Raw) -> None:
        match method:
            case "thread/started":
                started = msgspec.json.decode(params, type=p.ThreadStartedNotification)
                self.thread_id = started.thread.id
            case "thread/tokenUsage/updated":
                usage = msgspec.json.decode(params, type=p.ThreadTokenUsageUpdatedNotification)
                self.thread_usage = _tokens(usage.token_usage.total)
            case "item/completed":
                self._item(msgspec.json.decode(params, type=p.ItemCompletedNotification).item)
            case "turn/completed":
                turn = msgspec.json.decode(params, type=p.TurnCompletedNotification).turn
                self.turns += 1
                self.last_status = turn.status
                if turn.status == "failed":
                    self.error = turn.error.message if turn.error else "the turn failed"
                    self._keep_error(self.error)
                self.interrupted = turn.status == "interrupted"
            case "error":
                error = msgspec.json.decode(params, type=p.ErrorNotification)
                self._keep_error(error.error.message)
                if not error.will_retry:
                    self.error = error.error.message

    def _item(self, item: p.ThreadItem) -> None:
        if item.type == "agentMessage" and item.text is not None:
            self.final_message = item.text
            self.work_items += 1
        elif item.type == "commandExecution":
            self.work_items += 1
            self.commands += 1
            if item.exit_code not in (0, None) or item.status in ("failed", "declined"):
                self.failed_commands += 1
        elif item.type in ("fileChange", "mcpToolCall", "webSearch"):
            self.work_items += 1

    def failure(self) -> str | None:
        """Why a run whose codex exited 0 still failed, or None."""
        if self.last_status == "failed":
            return f"the turn failed: {self.error}"
        if self.last_status is None:
            reason = self.refusal or self.error or "no turn completed"
            return f"codex app-server ended before a turn completed: {reason}"
        return None

    def into(self, result: ExecutionResult) -> ExecutionResult:
        failure = self.failure()
        if failure is not None:
            self.error = failure
        super().into(result)
        result.turns = self.turns
        if self.interrupted and failure is None:
            result.reason = "turn interrupted by request; the task ended with what it had"
        return result


def _tokens(total: p.TokenUsageBreakdown) -> TokenUsage:
    return TokenUsage(
        input_tokens=total.input_tokens,
        cached_input_tokens=total.cached_input_tokens,
        output_tokens=total.output_tokens,
        reasoning_output_tokens=total.reasoning_output_tokens,
        total_tokens=total.total_tokens,
    )
