"""The Codex adapter: `codex exec --json` with the task's prompt, directory and overrides."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from fleetd.agents.appserver.session import AppServerSession, Policy, ThreadSettings
from fleetd.agents.appserver.summary import AppServerSummary
from fleetd.agents.base import AdapterContext, AgentCommand, AgentSummary, prompt_for
from fleetd.agents.codex_home import PrivateHomes, host_codex_home
from shared.config import CodexConfig
from shared.errors import ConfigError, FleetError
from shared.messages import Assign
from shared.models import ExecutionResult, TaskSpec

# Where `make` installs the pinned Codex CLI: the native binary, which skips node's start-up
# and one level of signal forwarding.
NATIVE_BINARY = Path(
    "node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
)


def local_install_candidates() -> list[Path]:
    """Project-local installs: beside the source tree, and beside the virtualenv."""
    source_root = Path(__file__).resolve().parents[2]
    venv_root = Path(sys.prefix).resolve().parent
    roots = dict.fromkeys([source_root, venv_root])
    return [root / ".tools" / "codex" / NATIVE_BINARY for root in roots]


def find_codex(config: CodexConfig) -> str:
    """The Codex binary: config or FLEET_CODEX_BIN, the project-local install, then PATH."""
    if config.bin:
        return config.bin
    for candidate in local_install_candidates():
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("codex")
    if found:
        return found
    raise ConfigError(
        "no Codex CLI found: run `make setup` (installs it under .tools/codex), "
        "install it with `npm install -g @openai/codex`, or set FLEET_CODEX_BIN"
    )


class CodexAdapter:
    """`codex exec --json` from a task and the `[codex]` config, each run in a private home."""

    def __init__(self, config: CodexConfig, homes: PrivateHomes) -> None:
        self.config = config
        self.homes = homes

    def command(self, assign: Assign, cwd: Path, env: dict[str, str]) -> AgentCommand:
        """`codex exec` (or `codex exec resume THREAD` to continue an earlier attempt), or
        `codex app-server` and the conversation that drives it (codex.mode)."""
        session = self._resumed_session(assign)
        home = self.homes.create(assign.execution, session)
        run_env = {**env, "CODEX_HOME": str(home)}
        if self.config.mode == "app-server":
            return AgentCommand(
                argv=[find_codex(self.config), "app-server", *self._overrides(assign.spec)],
                cwd=cwd,
                env=run_env,
                conversation=self._conversation(assign, cwd),
            )
        argv = self._argv(assign.spec, cwd)
        if assign.resume is not None:
            # exec's own options go before the subcommand; `resume` takes the thread id.
            argv += ["resume", assign.resume.thread_id, "--", prompt_for(assign)]
        else:
            # `--` so that a prompt starting with a dash is never read as a flag.
            argv += ["--", assign.spec.prompt]
        return AgentCommand(argv=argv, cwd=cwd, env=run_env, stdin=None)

    def _resumed_session(self, assign: Assign) -> str | None:
        """The earlier attempt's session file a resumed attempt continues (None: a new one)."""
        if assign.resume is None:
            return None
        session = assign.resume.session_file
        if not session or not Path(session).is_file():
            raise FleetError(
                f"cannot resume: the Codex session of execution {assign.resume.execution} "
                f"is gone; `fleetctl retry {assign.task}` (without --resume) starts over"
            )
        return session

    def _conversation(self, assign: Assign, cwd: Path) -> AppServerSession:
        spec, config = assign.spec, self.config
        resume = assign.resume
        settings = ThreadSettings(
            prompt=prompt_for(assign),
            cwd=str(cwd),
            model=spec.model or config.model,
            sandbox=spec.sandbox or config.sandbox,
            approval_policy=config.approval_policy,
            effort=spec.reasoning_effort,
            resume_thread=resume.thread_id if resume is not None else None,
            max_turns=spec.max_turns or 1,
        )
        policy = Policy(approvals=config.approvals, user_input_answer=config.user_input_answer)
        return AppServerSession(settings, policy)

    def finish(self, assign: Assign, result: ExecutionResult) -> None:
        """Keep the run's session file (for `retry --resume`) and remove its private home."""
        result.session_file = self.homes.finish(assign.execution, result.thread_id)

    def summary(self, assign: Assign) -> AgentSummary:
        """Codex's lines; a resumed thread's earlier tokens are not this run's."""
        resume = assign.resume
        baseline = resume.thread_usage if resume is not None else None
        if self.config.mode == "app-server":
            return AppServerSummary(baseline)
        return AgentSummary(baseline=baseline)

    def _argv(self, spec: TaskSpec, cwd: Path) -> list[str]:
        argv = [
            find_codex(self.config),
            "exec",
            "--json",
            "--color",
            "never",
            "--skip-git-repo-check",
            "--sandbox",
            spec.sandbox or self.config.sandbox,
            "--cd",
            str(cwd),
        ]
        model = spec.model or self.config.model
        if model:
            argv += ["--model", model]
        argv += self._overrides(spec)
        if spec.reasoning_effort:
            argv += ["-c", f"model_reasoning_effort={_toml_string(spec.reasoning_effort)}"]
        return argv

    def _overrides(self, spec: TaskSpec) -> list[str]:
        """`-c` flags: the gateway, the config's overrides, then the task's (which win)."""
        overrides = provider_overrides(self.config) + list(self.config.config)
        overrides += spec.codex_config
        return [flag for override in overrides for flag in ("-c", override)]


def plugin(context: AdapterContext) -> CodexAdapter:
    """The `codex` entry point: each run in a private CODEX_HOME seeded from the host's."""
    paths = context.paths
    homes = PrivateHomes(
        paths.codex_homes_dir, paths.sessions_dir, host_codex_home(context.host_env), context.mask
    )
    return CodexAdapter(context.config.codex, homes)


def provider_overrides(config: CodexConfig) -> list[str]:
    """`-c` overrides that point Codex at the configured gateway, if any."""
    if not config.provider_base_url:
        return []
    name = config.provider_name
    table = ", ".join(
        f"{key}={_toml_string(value)}"
        for key, value in (
            ("name", name),
            ("base_url", config.provider_base_url),
            ("env_key", config.provider_env_key),
            ("wire_api", config.provider_wire_api),
        )
    )
    return [f"model_provider={_toml_string(name)}", f"model_providers.{name}={{{table}}}"]


def _toml_string(value: str) -> str:
    """A TOML basic string, as `-c KEY=VALUE` parses its VALUE."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
