"""The `echo` agent: an example of a complete agent-fleet adapter in its own package.

Its agent (`fleet_example_adapter.agent`) writes the task's prompt to `echo.txt` in its working
directory and prints JSON Lines of its own shape: `{"kind": "said", "text": ...}` and a last
`{"kind": "done", "tokens": N}`. The adapter builds its command line, folds those lines into
the run's result (final message, tokens), and says why a run that exited 0 still failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fleetd.agents.base import AdapterContext, AgentCommand, AgentSummary
from shared.messages import Assign
from shared.models import ExecutionResult, TokenUsage


class EchoSummary(AgentSummary):
    """Reads the echo agent's lines (masked, as stored); `into()` fills the result from them."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0
        self.done = False

    def feed(self, payload: bytes, parsed: object) -> None:
        try:
            line = json.loads(payload)
        except ValueError:
            return  # not ours: stored as an event all the same
        if not isinstance(line, dict):
            return
        if line.get("kind") == "said":
            self.final_message = str(line.get("text"))
            self.work_items += 1
        elif line.get("kind") == "done":
            self.done = True
            self.tokens = int(line.get("tokens", 0))

    def token_usage(self) -> TokenUsage:
        return TokenUsage(output_tokens=self.tokens, total_tokens=self.tokens)

    def failure(self) -> str | None:
        return None if self.done else "the echo agent ended without its `done` line"


class EchoAdapter:
    """Runs the echo agent with this interpreter; `[echo]` settings come from its environment."""

    def __init__(self, context: AdapterContext) -> None:
        self.name = context.name
        self.greeting = context.host_env.get("ECHO_AGENT_GREETING", "echo")

    def command(self, assign: Assign, cwd: Path, env: dict[str, str]) -> AgentCommand:
        argv = [sys.executable, "-m", "fleet_example_adapter.agent", self.greeting]
        # The prompt goes on stdin: an argv is visible to every user in `ps`.
        return AgentCommand(argv=argv, cwd=cwd, env=env, stdin=assign.spec.prompt.encode())

    def summary(self, assign: Assign) -> EchoSummary:
        return EchoSummary()

    def finish(self, assign: Assign, result: ExecutionResult) -> None:
        """Nothing to keep: the echo agent has no session to resume."""


def plugin(context: AdapterContext) -> EchoAdapter:
    """The entry point: called once per fleetd worker, with what the worker offers."""
    return EchoAdapter(context)
