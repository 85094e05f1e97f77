"""The command adapter: runs any argv that prints JSON Lines, with the prompt on its stdin."""

from __future__ import annotations

from pathlib import Path

from fleetd.agents.base import AgentCommand
from shared.models import TaskSpec


class CommandAdapter:
    """For tests, benchmarks and custom agents; events in Codex's shape fill the summary."""

    def command(
        self, spec: TaskSpec, cwd: Path, env: dict[str, str], resume_thread: str | None = None
    ) -> AgentCommand:
        return AgentCommand(argv=list(spec.argv), cwd=cwd, env=env, stdin=spec.prompt.encode())
