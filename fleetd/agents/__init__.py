"""Agent adapters, one module each, and the table the worker picks from by a task's `agent`.

To add an agent: write an adapter (`fleetd.agents.base.Adapter`: a command line from a task,
and what to keep when it ends), add its kind to `shared.models.AgentKind`, and add it below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fleetd.agents.base import Adapter, AgentSummary
from fleetd.agents.claude import ClaudeAdapter
from fleetd.agents.claude_events import ClaudeSummary
from fleetd.agents.claude_home import ClaudeHomes, host_claude_dir
from fleetd.agents.codex import CodexAdapter
from fleetd.agents.codex_home import PrivateHomes, host_codex_home
from fleetd.agents.command import CommandAdapter
from shared.config import FleetConfig
from shared.models import AgentKind


def adapters(
    config: FleetConfig, host_env: Mapping[str, str], mask: Callable[[bytes], bytes]
) -> dict[AgentKind, Adapter]:
    """One adapter per agent kind; `mask` removes secrets from what they keep (sessions)."""
    paths = config.paths()
    homes = PrivateHomes(paths.codex_homes_dir, paths.sessions_dir, host_codex_home(host_env), mask)
    claude_homes = ClaudeHomes(
        paths.claude_homes_dir, paths.sessions_dir, host_claude_dir(host_env), mask
    )
    return {
        "codex": CodexAdapter(config.codex, homes),
        "claude": ClaudeAdapter(config.claude, claude_homes),
        "command": CommandAdapter(),
    }


def summary_for(kind: AgentKind) -> AgentSummary:
    """What folds a run's events into its result: Claude Code's own shape, or Codex's."""
    return ClaudeSummary() if kind == "claude" else AgentSummary()
