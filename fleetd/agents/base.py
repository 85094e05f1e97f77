"""What an agent adapter is: a task in, a process description out; event lines in, a summary out."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fleetd.agents.codex_events import AgentLine
from shared.config import FleetConfig
from shared.messages import Assign
from shared.models import ExecutionResult, TokenUsage
from shared.paths import StatePaths

# Bounds on the error messages a summary keeps for classifying a failure.
MAX_ERRORS = 20
MAX_ERROR_CHARS = 2000
# Completed items that mean the agent did real work (not warnings, plans or reasoning).
WORK_ITEMS = frozenset(
    {"agent_message", "command_execution", "file_change", "mcp_tool_call", "web_search"}
)


# What an attempt that resumes its own task's earlier attempt is told (`retry --resume`).
RESUME_PROMPT = (
    "The previous attempt at this task was interrupted. Continue from where it stopped, "
    "finish the task, and say what you did."
)


def prompt_for(assign: Assign) -> str:
    """The prompt of this run: RESUME_PROMPT when it resumes its own task's earlier attempt;
    the task's own otherwise, also when it continues another task's thread (`continues`)."""
    if assign.resume is not None and assign.spec.continues is None:
        return RESUME_PROMPT
    return assign.spec.prompt


@dataclass(frozen=True)
class ToAgent:
    """A line to write to the agent's stdin, and the event line that records it."""

    line: bytes
    event: bytes


class Conversation(Protocol):
    """An agent spoken to over its stdin while it runs (codex app-server's JSON-RPC).

    Socket-free: each masked stdout line in, lines to write out. Once `finished`, the worker
    closes the agent's stdin (the agent then ends by itself)."""

    @property
    def finished(self) -> bool: ...

    @property
    def failure(self) -> str | None:
        """Why the conversation broke down (the run then fails with it), or None."""
        ...

    def opening(self) -> list[ToAgent]: ...

    def on_line(self, payload: bytes) -> list[ToAgent]: ...

    def say(self, text: str) -> tuple[list[ToAgent], str | None]:
        """Steer the agent's current turn; the lines, or why it cannot be."""
        ...

    def interrupt(self) -> tuple[list[ToAgent], str | None]:
        """End the agent's current turn, starting no other; the lines, or why not."""
        ...


@dataclass(frozen=True)
class AgentCommand:
    """How to start one agent run."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    stdin: bytes | None = None  # None: the agent's stdin is /dev/null
    conversation: Conversation | None = None  # stdin is a pipe fleetd speaks through instead


@dataclass(frozen=True)
class AdapterContext:
    """What a worker hands an adapter's factory (the object its entry point names)."""

    name: str  # the entry point's name: the `agent` tasks give to run this adapter
    config: FleetConfig
    paths: StatePaths
    host_env: Mapping[str, str]  # the worker's whole environment: read settings, pass none on
    mask: Callable[[bytes], bytes]  # removes the fleet's secrets from what an adapter keeps


class Adapter(Protocol):
    """One kind of agent: turns an assigned task into an `AgentCommand`, folds its output into a
    result, and keeps what a later attempt needs once it ended. Knows nothing of sockets or
    databases. Found by name in the `agent_fleet.agents` entry points (`fleetd.agents`)."""

    def command(self, assign: Assign, cwd: Path, env: dict[str, str]) -> AgentCommand:
        """How to start the agent for `assign` in `cwd`, with the allow-listed `env`; raises
        FleetError (or OSError) with the reason when it cannot be started."""
        ...

    def finish(self, assign: Assign, result: ExecutionResult) -> None:
        """After the agent ended (or failed to start): keep what a resumed attempt needs in
        `result`, and remove what the run was given."""
        ...

    def summary(self, assign: Assign) -> AgentSummary:
        """A fresh summary for the run of `assign`: reads each output line, fills the result."""
        ...


@dataclass
class AgentSummary:
    """Folds a run's events (Codex's JSON Lines shape) into its result fields."""

    thread_id: str | None = None
    final_message: str | None = None
    error: str | None = None
    commands: int = 0
    failed_commands: int = 0
    # Codex's `turn.completed.usage` is the thread's running total, not the turn's: the latest
    # one is kept, and what the thread had used before this run (a resumed attempt's) taken off.
    thread_usage: TokenUsage | None = None
    baseline: TokenUsage | None = None
    work_items: int = 0
    # The latest `error` and `turn.failed` messages, oldest first (`error` items are warnings).
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_ERRORS))

    def feed(self, payload: bytes, parsed: AgentLine | None) -> None:
        """One masked output line, and its Codex-shaped parse (None if it has not that shape)."""
        if parsed is not None:
            self.observe(parsed)

    def failure(self) -> str | None:
        """Why the run failed even though the agent exited with status 0 (None: it did not)."""
        return None

    def verdict(self, exit_code: int | None, signal: int | None) -> tuple[str, str] | None:
        """The failure class and reason the agent's own events tell, or None to infer them."""
        return None

    def token_usage(self) -> TokenUsage:
        """The run's tokens: the one figure budgets and `fleetctl show` read."""
        return usage_since(self.thread_usage or TokenUsage(), self.baseline or TokenUsage())

    def spent(self) -> tuple[TokenUsage, float | None, str | None]:
        """The usage reported so far, the cost the agent reported (None: it does not say) and
        the model it named (None: unknown): what a run's budget is checked against."""
        return self.token_usage(), None, None

    def observe(self, line: AgentLine) -> None:
        match line.type:
            case "thread.started":
                self.thread_id = line.thread_id or self.thread_id
            case "item.completed" if line.item is not None:
                self._item(line)
            case "turn.completed" if line.usage is not None:
                self._thread_usage(line)
            case "turn.failed" if line.error is not None:
                self.error = line.error.message
                self._keep_error(line.error.message)
            case "error" if line.message:
                self.error = line.message
                self._keep_error(line.message)

    def _keep_error(self, message: str | None) -> None:
        if message:
            self.errors.append(message[:MAX_ERROR_CHARS])

    def _item(self, line: AgentLine) -> None:
        item = line.item
        assert item is not None
        if item.type in WORK_ITEMS:
            self.work_items += 1
        if item.type == "agent_message" and item.text is not None:
            self.final_message = item.text
        elif item.type == "command_execution":
            self.commands += 1
            if item.exit_code not in (0, None) or item.status == "failed":
                self.failed_commands += 1

    def _thread_usage(self, line: AgentLine) -> None:
        usage = line.usage
        assert usage is not None
        self.thread_usage = TokenUsage(
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
            reasoning_output_tokens=usage.reasoning_output_tokens,
            total_tokens=usage.input_tokens + usage.output_tokens,
        )

    def into(self, result: ExecutionResult) -> ExecutionResult:
        """Fill a result's agent-derived fields."""
        result.thread_id = self.thread_id
        result.final_message = self.final_message
        result.usage = self.token_usage()
        result.thread_usage = self.thread_usage
        result.commands = self.commands
        result.failed_commands = self.failed_commands
        if result.error is None and self.error is not None:
            result.error = self.error
        return result


def usage_since(total: TokenUsage, before: TokenUsage) -> TokenUsage:
    """What `total` (a running total) added to `before`; never below zero."""
    return TokenUsage(
        input_tokens=max(0, total.input_tokens - before.input_tokens),
        cached_input_tokens=max(0, total.cached_input_tokens - before.cached_input_tokens),
        output_tokens=max(0, total.output_tokens - before.output_tokens),
        reasoning_output_tokens=max(
            0, total.reasoning_output_tokens - before.reasoning_output_tokens
        ),
        total_tokens=max(0, total.total_tokens - before.total_tokens),
    )
