"""The Claude Code adapter: `claude -p PROMPT --output-format stream-json --verbose`, headless.

Tools are granted with `--allowedTools` (claude.allowed_tools): `--permission-mode
bypassPermissions` is refused when running as root ("cannot be used with root/sudo
privileges"), and a headless run has nobody to ask. Stdin is /dev/null.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from fleetd.agents.base import AdapterContext, AgentCommand, prompt_for
from fleetd.agents.claude_events import ClaudeSummary
from fleetd.agents.claude_home import ClaudeHomes, host_claude_dir
from shared.config import ClaudeConfig
from shared.errors import ConfigError, FleetError
from shared.messages import Assign
from shared.models import ExecutionResult

# Where `make` installs the pinned CLI: the native binary of the linux-x64 package.
NATIVE_BINARY = Path("node_modules/@anthropic-ai/claude-code-linux-x64/claude")
# Set for every run: no telemetry, error reports or self-updates from a fleet's agents.
QUIET_ENV = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}


def find_claude(config: ClaudeConfig) -> str:
    """The CLI: config or FLEET_CLAUDE_BIN, the project-local install, then PATH."""
    if config.bin:
        return config.bin
    roots = dict.fromkeys([Path(__file__).resolve().parents[2], Path(sys.prefix).resolve().parent])
    for root in roots:
        candidate = root / ".tools" / "claude" / NATIVE_BINARY
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("claude")
    if found:
        return found
    raise ConfigError(
        "no Claude Code CLI found: run `make setup` (installs it under .tools/claude), "
        "install it with `npm install -g @anthropic-ai/claude-code`, or set FLEET_CLAUDE_BIN"
    )


class ClaudeAdapter:
    """Claude Code from a task and the `[claude]` config, each run in a private config dir."""

    def __init__(self, config: ClaudeConfig, homes: ClaudeHomes) -> None:
        self.config = config
        self.homes = homes

    def command(self, assign: Assign, cwd: Path, env: dict[str, str]) -> AgentCommand:
        """A new session, or `--resume SESSION` to continue an earlier attempt's."""
        config, spec = self.config, assign.spec
        argv = [find_claude(config), "-p", "--output-format", "stream-json", "--verbose"]
        model = spec.model or config.model
        if model:
            argv += ["--model", model]
        # The task's own turns and permissions, else the `[claude]` config's.
        max_turns = spec.max_turns or config.max_turns
        if max_turns:
            argv += ["--max-turns", str(max_turns)]
        if config.max_budget_usd:
            argv += ["--max-budget-usd", f"{config.max_budget_usd:g}"]
        allowed_tools = spec.allowed_tools or config.allowed_tools
        if allowed_tools:
            argv.append("--allowedTools=" + ",".join(allowed_tools))
        permission_mode = spec.permission_mode or config.permission_mode
        if permission_mode:
            argv += ["--permission-mode", permission_mode]
        argv += config.args
        session = None
        prompt = prompt_for(assign)
        if assign.resume is not None:
            session = assign.resume.session_file
            if not session or not Path(session).is_file():
                raise FleetError(
                    f"cannot resume: the Claude session of execution {assign.resume.execution} "
                    f"is gone; `fleetctl retry {assign.task}` (without --resume) starts over"
                )
            argv += ["--resume", assign.resume.thread_id]
        # `--` so that a prompt starting with a dash is never read as a flag.
        argv += ["--", prompt]
        home = self.homes.create(assign.execution, cwd, session)
        run_env = {**env, **QUIET_ENV, "CLAUDE_CONFIG_DIR": str(home)}
        if config.base_url:
            run_env["ANTHROPIC_BASE_URL"] = config.base_url
        return AgentCommand(argv=argv, cwd=cwd, env=run_env, stdin=None)

    def finish(self, assign: Assign, result: ExecutionResult) -> None:
        """Keep the run's transcript (for `retry --resume`) and remove its config directory."""
        result.session_file = self.homes.finish(assign.execution, result.thread_id)

    def summary(self, assign: Assign) -> ClaudeSummary:
        return ClaudeSummary()


def plugin(context: AdapterContext) -> ClaudeAdapter:
    """The `claude` entry point: each run in a private CLAUDE_CONFIG_DIR."""
    paths = context.paths
    homes = ClaudeHomes(
        paths.claude_homes_dir, paths.sessions_dir, host_claude_dir(context.host_env), context.mask
    )
    return ClaudeAdapter(context.config.claude, homes)
