"""A real fleetd whose Claude Code runs talk to the tests' loopback `AnthropicServer`.

Claude Code 2.1.332 reads `ANTHROPIC_BASE_URL` (no `/v1`: it appends `/v1/messages`) and
sends `ANTHROPIC_API_KEY` as `x-api-key`. With `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`
(fleetd sets it for every run) it opens no other connection. `CLAUDE_CODE_MAX_RETRIES=1`
keeps a refused request from being retried ten times with backoff.
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.config import WorkerConfig
from tests.support.anthropic_server import AnthropicServer
from tests.support.fleet import Fleet

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_CLAUDE = REPO_ROOT / ".tools/claude/node_modules/@anthropic-ai/claude-code-linux-x64/claude"
API_KEY = "sk-ant-test-fleet-e2e-0123456789"
MODEL = "claude-test-model"


def claude_binary() -> Path:
    """The native claude binary: `$FLEET_CLAUDE_BIN`, else the project-local install."""
    override = os.environ.get("FLEET_CLAUDE_BIN")
    return Path(override) if override else PROJECT_CLAUDE


def claude_fleet_env(tmp_path: Path, server: AnthropicServer) -> dict[str, str]:
    """The fleetd environment: the host's, its Claude settings in a directory of the test's,
    the key and gateway for `server`, and one retry allowed through to the agent."""
    host_dir = tmp_path / "host-claude"
    host_dir.mkdir(exist_ok=True)
    # Claude Code's Bash tool first snapshots the user's login shell; an empty HOME keeps the
    # host's ~/.bashrc (pyenv and the like: seconds each on a loaded machine) out of it.
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    allow = [*WorkerConfig().env_allow, "CLAUDE_CODE_MAX_RETRIES"]
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))},
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(host_dir),
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": server.base_url,
        "CLAUDE_CODE_MAX_RETRIES": "1",
        "FLEET_CLAUDE_BIN": str(claude_binary()),
        "FLEET_WORKER_ENV_ALLOW": ",".join(allow),
    }


def enqueue_claude(fleet: Fleet, prompt: str, cwd: Path | None, *more: str) -> int:
    where = ["--cwd", str(cwd)] if cwd is not None else []
    return fleet.enqueue(prompt, "--agent", "claude", "--model", MODEL, *where, *more)
