"""The command adapter: runs any argv that prints JSON Lines, with the prompt on its stdin."""

from __future__ import annotations

from pathlib import Path

from fleetd.agents.base import AdapterContext, AgentCommand, AgentSummary
from shared.messages import Assign
from shared.models import ExecutionResult


class CommandAdapter:
    """For tests, benchmarks and custom agents; events in Codex's shape fill the summary."""

    def command(self, assign: Assign, cwd: Path, env: dict[str, str]) -> AgentCommand:
        spec = assign.spec
        return AgentCommand(argv=list(spec.argv), cwd=cwd, env=env, stdin=spec.prompt.encode())

    def finish(self, assign: Assign, result: ExecutionResult) -> None:
        """Nothing to keep: a command agent has no thread to resume."""

    def summary(self, assign: Assign) -> AgentSummary:
        return AgentSummary()


def plugin(context: AdapterContext) -> CommandAdapter:
    """The `command` entry point."""
    return CommandAdapter()
