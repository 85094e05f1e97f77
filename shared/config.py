"""Typed configuration: TOML file, then `FLEET_*` environment variables, then command-line flags."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from shared.errors import ConfigError
from shared.models import AgentKind, NodeName, SandboxMode
from shared.paths import StatePaths, default_config_file, default_state_dir

ENV_PREFIX = "FLEET_"
# Variables that are not settings but are read by the tools themselves.
ENV_NOT_SETTINGS = frozenset({"FLEET_CONFIG"})
DEFAULT_WEB_LISTEN = "127.0.0.1:8765"
QUEUE_URL_SCHEMES = ("postgresql://", "postgres://")


def _doc(default_type: Any, text: str, **limits: Any) -> Any:
    return Annotated[default_type, msgspec.Meta(description=text, **limits)]


class Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A config section: unknown keys are an error that names them."""


class QueueConfig(Section):
    max_attempts: _doc(int, "attempts per task before it fails (a task may override)", ge=1) = 3
    lease_seconds: _doc(
        float, "a running task whose worker is silent this long goes back to the queue", gt=0
    ) = 30.0
    retry_backoff_seconds: _doc(
        float, "first wait before retrying a transient failure (doubles, with jitter)", ge=0
    ) = 5.0
    retry_backoff_max: _doc(float, "longest wait between retries", ge=0) = 300.0
    url: _doc(
        str,
        "where the queue lives: `sqlite` (queue.db in the state directory, one host) or "
        "postgresql://USER:PASSWORD@HOST:PORT/DB (shared by the fleetd of several hosts)",
    ) = "sqlite"

    def __post_init__(self) -> None:
        if self.url != "sqlite" and not self.url.startswith(QUEUE_URL_SCHEMES):
            # Only the scheme is named: the rest of a URL may hold its password.
            scheme = self.url.partition("://")[0] if "://" in self.url else "no scheme"
            raise ValueError(
                f"queue.url must be `sqlite` or a postgresql:// URL, not one with {scheme!r}"
            )

    @property
    def postgres(self) -> bool:
        return self.url != "sqlite"


class WorkerConfig(Section):
    heartbeat_seconds: _doc(float, "how often a worker renews its lease", gt=0) = 1.0
    grace_seconds: _doc(float, "after SIGTERM, how long an agent may take before SIGKILL", ge=0) = (
        10.0
    )
    timeout_seconds: _doc(float, "default wall-clock limit of one agent run", gt=0) = 3600.0
    idle_timeout_seconds: _doc(
        float, "default limit on time without any agent output (hung runs)", gt=0
    ) = 900.0
    max_line_bytes: _doc(
        int, "longest agent output line kept as one event; longer lines are split", ge=1024
    ) = 64 * 1024 * 1024
    output_batch_ms: _doc(
        float,
        "how long an agent's output may gather before the worker reads it (fewer, larger "
        "event batches); its end is read at once; 0 reads every write as it comes",
        ge=0,
        le=1000,
    ) = 10.0
    env_allow: _doc(list[str], "host environment variables passed to agents (nothing else is)") = (
        msgspec.field(
            default_factory=lambda: [
                "PATH",
                "HOME",
                "USER",
                "LOGNAME",
                "LANG",
                "LC_ALL",
                "LC_CTYPE",
                "TZ",
                "TERM",
                "TMPDIR",
                "SSL_CERT_FILE",
                "SSL_CERT_DIR",
                "OPENAI_API_KEY",
                "CODEX_API_KEY",
                "OPENAI_ORG_ID",
                "OPENAI_PROJECT_ID",
                "CODEX_HOME",
                "ANTHROPIC_API_KEY",
                "CLAUDE_CODE_OAUTH_TOKEN",
                "ANTHROPIC_AUTH_TOKEN",
                "ANTHROPIC_BASE_URL",
            ]
        )
    )
    secret_env: _doc(
        list[str], "allowed variables whose values are masked in every stored or printed event"
    ) = msgspec.field(
        default_factory=lambda: [
            "OPENAI_API_KEY",
            "CODEX_API_KEY",
            "ANTHROPIC_API_KEY",
            "CLAUDE_CODE_OAUTH_TOKEN",
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "ANTHROPIC_AUTH_TOKEN",
        ]
    )

    def secret_values(self, env: Mapping[str, str]) -> list[str]:
        """The values of the `secret_env` variables set in `env`: what every output masks."""
        return [env[name] for name in self.secret_env if env.get(name)]


class CodexConfig(Section):
    bin: _doc(str | None, "Codex CLI binary (default: project-local install, then PATH)") = None
    model: _doc(str | None, "model for tasks that name none (default: Codex's own)") = None
    sandbox: _doc(SandboxMode, "Codex sandbox mode") = "workspace-write"
    config: _doc(list[str], "extra `-c KEY=VALUE` overrides passed to every Codex run") = (
        msgspec.field(default_factory=list)
    )
    provider_base_url: _doc(
        str | None,
        "a Responses-compatible endpoint (a team gateway) every Codex run uses instead of "
        "OpenAI's; its key comes from codex.provider_env_key",
    ) = None
    provider_name: _doc(str, "the name Codex gives that provider", pattern="^[A-Za-z0-9_-]+$") = (
        "fleet"
    )
    provider_env_key: _doc(
        str, "variable holding the provider's API key (keep it in worker.env_allow)"
    ) = "OPENAI_API_KEY"
    provider_wire_api: _doc(Literal["responses", "chat"], "the provider's API") = "responses"
    mode: _doc(
        Literal["exec", "app-server"],
        "how fleetd drives Codex: `codex exec --json`, or JSON-RPC to `codex app-server` "
        "(exact token totals, several turns, `fleetctl say` and `interrupt`)",
    ) = "exec"
    approval_policy: _doc(
        Literal["never", "on-request", "untrusted"],
        "app-server: when Codex asks before running a command (asked: see codex.approvals)",
    ) = "never"
    approvals: _doc(
        Literal["approve", "deny"],
        "app-server: how fleetd answers Codex's approval requests (each answer is an event)",
    ) = "deny"
    user_input_answer: _doc(
        str, "app-server: fleetd's answer when Codex asks the user a question"
    ) = "Nobody is available to answer; decide for yourself and carry on."


class ClaudeConfig(Section):
    bin: _doc(str | None, "Claude Code CLI binary (default: project-local install, then PATH)") = (
        None
    )
    model: _doc(str | None, "model for tasks that name none (default: Claude Code's own)") = None
    max_turns: _doc(int, "most agent turns of one run (--max-turns; 0: no limit)", ge=0) = 0
    max_budget_usd: _doc(
        float, "most dollars one run may spend (--max-budget-usd; 0: no limit)", ge=0
    ) = 0.0
    allowed_tools: _doc(
        list[str],
        "tools a run may use without asking (--allowedTools; headless runs cannot ask, and "
        "bypassPermissions is refused as root)",
    ) = msgspec.field(
        default_factory=lambda: ["Bash", "Edit", "Write", "Read", "Glob", "Grep", "MultiEdit"]
    )
    permission_mode: _doc(
        Literal["default", "acceptEdits", "plan", "bypassPermissions"] | None,
        "--permission-mode of every run (bypassPermissions only as a non-root user)",
    ) = None
    args: _doc(list[str], "extra arguments passed to every Claude Code run") = msgspec.field(
        default_factory=list
    )
    base_url: _doc(
        str | None,
        "an Anthropic Messages gateway every run uses (ANTHROPIC_BASE_URL, without /v1)",
    ) = None


class WorkspaceConfig(Section):
    author_name: _doc(str, "author of the commits made on task branches") = "agent-fleet"
    author_email: _doc(str, "author e-mail of those commits") = "agent-fleet@localhost"
    retention_hours: _doc(
        float, "worktrees of finished tasks are removed after this long (branches stay)", gt=0
    ) = 168.0
    hook_timeout_seconds: _doc(float, "limit on each workspace hook", gt=0) = 300.0
    after_create: _doc(str | None, "shell snippet run once in a new worktree") = None
    before_run: _doc(str | None, "shell snippet run before each attempt") = None
    after_run: _doc(str | None, "shell snippet run after each attempt (failure ignored)") = None
    before_remove: _doc(str | None, "shell snippet run before a worktree is removed") = None


class RecorderConfig(Section):
    batch_max: _doc(int, "most events stored in one transaction", ge=1) = 20000


class SupervisorConfig(Section):
    stop_timeout: _doc(float, "default bound on a whole `fleetctl stop`", gt=0) = 60.0
    restart_backoff_max: _doc(float, "longest wait before restarting a crashed child", gt=0) = 10.0
    crash_loop_restarts: _doc(
        int, "restarts of one child within the window that stop the fleet", ge=1
    ) = 5
    crash_loop_window: _doc(float, "the crash-loop window, in seconds", gt=0) = 60.0


class WebConfig(Section):
    listen: _doc(
        str,
        "the dashboard, HTTP API and /metrics: HOST:PORT, or `off` (the default port, if taken, "
        "is skipped with a warning; any other address that cannot be bound stops fleetd)",
    ) = DEFAULT_WEB_LISTEN
    token: _doc(
        str | None,
        "the access token (default: one generated into <state>/web-token); needed for a "
        "non-loopback listen address",
    ) = None
    metrics_auth: _doc(
        bool, "/metrics needs the token when served beyond loopback (loopback is always open)"
    ) = True


class Price(Section):
    """A model's prices, in USD per million tokens of each kind."""

    input: _doc(float, "USD per million input tokens (uncached)", ge=0) = 0.0
    cached_input: _doc(float, "USD per million cached input tokens", ge=0) = 0.0
    output: _doc(float, "USD per million output tokens (reasoning included)", ge=0) = 0.0


class ScopeBudget(Section):
    """A rolling window's caps for the tasks one selector matches."""

    tokens_per_day: _doc(int, "tokens these tasks may spend in a window (0: no cap)", ge=0) = 0
    cost_per_day: _doc(float, "USD these tasks may spend in a window (0: no cap)", ge=0) = 0.0


class BudgetConfig(Section):
    max_tokens: _doc(int, "default token budget of one task's run (0: none)", ge=0) = 0
    max_cost: _doc(float, "default cost budget of one task's run, USD (0: none)", ge=0) = 0.0
    tokens_per_day: _doc(
        int, "tokens the whole fleet may spend in a window; then no task starts (0: no cap)", ge=0
    ) = 0
    cost_per_day: _doc(
        float, "USD the whole fleet may spend in a window; then no task starts (0: no cap)", ge=0
    ) = 0.0
    window_hours: _doc(float, "the rolling window of the per-day caps, in hours", gt=0) = 24.0
    per: _doc(dict[str, ScopeBudget], 'caps per selector ([budget.per."agent:claude"], ...)') = (
        msgspec.field(default_factory=dict)
    )
    rate_limit_hold_seconds: _doc(
        float,
        "after a run of one agent kind is rate-limited, its kind starts nothing this long",
        ge=0,
    ) = 60.0


# owner/name, as GitHub spells them (and never `.` or `..`, which would walk the API's paths).
GitHubRepo = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*/(?!\.\.?$)[A-Za-z0-9_.-]+$")
]


class GitHubTrackerConfig(Section):
    api_url: _doc(
        str, "GitHub's API (GitHub Enterprise: https://HOST/api/v3)", pattern="^https?://"
    ) = "https://api.github.com"
    repos: _doc(
        list[GitHubRepo], "repositories (owner/name) whose labelled issues become tasks"
    ) = msgspec.field(default_factory=list)
    label: _doc(
        str, "open issues with this label become tasks", min_length=1, pattern="^[^,]+$"
    ) = "agent-fleet"
    token_env: _doc(str, "the variable holding the token (never stored or logged)") = "GITHUB_TOKEN"
    poll_seconds: _doc(float, "how often each repository is polled", gt=0) = 30.0
    agent: _doc(AgentKind, "the agent of the issues' tasks") = "codex"
    argv: _doc(list[str], 'the command of the issues\' tasks, for agent = "command"') = (
        msgspec.field(default_factory=list)
    )
    draft: _doc(bool, "open the pull requests as drafts") = False


class TrackerConfig(Section):
    github: GitHubTrackerConfig | None = None


class NodeConfig(Section):
    name: _doc(
        NodeName | None,
        "this fleetd's name among the nodes sharing a queue (default: the host name)",
    ) = None


class FleetConfig(Section):
    state_dir: _doc(str | None, "state directory (default: $XDG_STATE_HOME/agent-fleet)") = None
    workers: _doc(int, "number of agents run in parallel", ge=1, le=256) = 2
    log_json: _doc(bool, "log structured JSON lines instead of text") = False
    log_level: _doc(Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"], "log level") = "INFO"
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    worker: WorkerConfig = msgspec.field(default_factory=WorkerConfig)
    codex: CodexConfig = msgspec.field(default_factory=CodexConfig)
    claude: ClaudeConfig = msgspec.field(default_factory=ClaudeConfig)
    workspace: WorkspaceConfig = msgspec.field(default_factory=WorkspaceConfig)
    recorder: RecorderConfig = msgspec.field(default_factory=RecorderConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    web: WebConfig = msgspec.field(default_factory=WebConfig)
    budget: BudgetConfig = msgspec.field(default_factory=BudgetConfig)
    node: NodeConfig = msgspec.field(default_factory=NodeConfig)
    tracker: TrackerConfig = msgspec.field(default_factory=TrackerConfig)
    limits: _doc(
        dict[str, Annotated[int, msgspec.Meta(ge=0)]],
        'running tasks per selector ("agent:claude" = 2, "repo:URL" = 1, "label:team=web" = 3)',
    ) = msgspec.field(default_factory=dict)
    prices: _doc(dict[str, Price], 'per-model prices ([prices."gpt-5"] input = 1.25, ...)') = (
        msgspec.field(default_factory=dict)
    )

    def __post_init__(self) -> None:
        if not self.limits and not self.budget.per:
            return  # `fleetctl status` reads the config too: without selectors, no import
        from shared.selectors import parse_selector

        for text in [*self.limits, *self.budget.per]:
            parse_selector(text)  # its ValueError names the bad selector

    def paths(self) -> StatePaths:
        """The state paths; `state_dir` is always set once loaded."""
        assert self.state_dir is not None, "load_config fills state_dir"
        return StatePaths(Path(self.state_dir))


SECTIONS = (
    "queue",
    "worker",
    "codex",
    "claude",
    "workspace",
    "recorder",
    "supervisor",
    "web",
    "budget",
    "node",
)


# Settings that are tables, set in the config file only (no FLEET_* variable, no flag).
TABLES = frozenset({"limits", "prices", "budget.per"})


def agent_environment(config: FleetConfig, host: Mapping[str, str]) -> dict[str, str]:
    """An agent's (and a workspace hook's) environment: only the allow-listed host variables."""
    return {name: host[name] for name in config.worker.env_allow if name in host}


def iter_settings() -> Iterator[tuple[str, str, str, Any]]:
    """(dotted key, env variable, description, default) for every setting, for --help."""
    info = msgspec.inspect.type_info(FleetConfig)
    for field in info.fields:
        if field.name == "tracker":
            for sub in msgspec.inspect.type_info(GitHubTrackerConfig).fields:
                key = f"tracker.github.{sub.name}"
                yield key, _env_name(key), _description(sub.type), _default(sub)
        elif field.name in SECTIONS:
            section = msgspec.inspect.type_info(field.type.cls)
            for sub in section.fields:
                key = f"{field.name}.{sub.name}"
                if key not in TABLES:
                    yield key, _env_name(key), _description(sub.type), _default(sub)
        elif field.name not in TABLES:
            yield field.name, _env_name(field.name), _description(field.type), _default(field)


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _description(field_type: Any) -> str:
    """The Meta description, which msgspec.inspect keeps in the JSON-schema extras."""
    schema = getattr(field_type, "extra_json_schema", None) or {}
    return str(schema.get("description", ""))


def _default(field: Any) -> Any:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return None


def setting_keys() -> list[str]:
    """Every setting's dotted key, in iter_settings' order; read off the structs, without
    msgspec.inspect.type_info, which costs every fleetctl command a few milliseconds."""
    defaults = FleetConfig()
    keys = []
    for name in FleetConfig.__struct_fields__:
        if name == "tracker":
            keys += [f"tracker.github.{sub}" for sub in GitHubTrackerConfig.__struct_fields__]
        elif name in SECTIONS:
            subs = getattr(defaults, name).__struct_fields__
            keys += [f"{name}.{sub}" for sub in subs if f"{name}.{sub}" not in TABLES]
        elif name not in TABLES:
            keys.append(name)
    return keys


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    known = {_env_name(key): key for key in setting_keys()}
    data: dict[str, Any] = {}
    unknown = []
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        key = known.get(name)
        if key is None:
            unknown.append(name)
            continue
        _set_dotted(data, key, _env_value(key, value))
    if unknown:
        raise ConfigError(
            f"unknown setting variable(s) {', '.join(sorted(unknown))}; "
            "`fleetd --help` lists the FLEET_* variables"
        )
    return data


def _env_value(key: str, value: str) -> Any:
    """Lists come from the environment comma-separated; the rest converts from text (lax)."""
    if key in (
        "worker.env_allow",
        "worker.secret_env",
        "codex.config",
        "claude.allowed_tools",
        "claude.args",
        "tracker.github.repos",
        "tracker.github.argv",
    ):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    head, _, tail = key.partition(".")
    if tail:
        data.setdefault(head, {})
        _set_dotted(data[head], tail, value)
    else:
        data[head] = value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        elif isinstance(value, Mapping) and key in merged:
            raise ConfigError(f"invalid setting: `{key}` must be a table ([{key}]), not a value")
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # here: most fleetctl commands read no config file

    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc


def load_config(
    env: Mapping[str, str],
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
) -> FleetConfig:
    """Build the config: file < environment < flags (dotted keys); state_dir always filled."""
    source = "defaults"
    data: dict[str, Any] = {}
    path = config_file or (Path(env["FLEET_CONFIG"]) if env.get("FLEET_CONFIG") else None)
    if path is None and default_config_file(env).is_file():
        path = default_config_file(env)
    if path is not None:
        data = _read_toml(path)
        source = f"config file {path}"
    data = _merge(data, _env_overrides(env))
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    try:
        config = msgspec.convert(data, FleetConfig, strict=False)
    except msgspec.ValidationError as exc:
        where = str(exc).replace("$.", "")
        raise ConfigError(f"invalid setting ({source}, FLEET_* or flags): {where}") from exc
    if config.state_dir is None:
        config = msgspec.structs.replace(config, state_dir=str(default_state_dir(env)))
    state_dir = str(Path(config.state_dir).expanduser().absolute())
    config = msgspec.structs.replace(config, state_dir=state_dir)
    if config.node.name is None:
        node = NodeConfig(name=default_node_name())
        config = msgspec.structs.replace(config, node=node)
    return config


def default_node_name() -> str:
    """The host name, made a valid node name (its first label; odd characters become `-`)."""
    import os
    import re

    # os.uname's nodename is what socket.gethostname() returns, without importing socket.py
    # (5-9 ms of `fleetctl status`, which loads the config: tests/integration/
    # test_fleetctl_status_path.py).
    label = os.uname().nodename.split(".")[0]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", label)[:63].lstrip("._-")
    return name or "node"


def url_without_password(url: str) -> str:
    """A database URL fit for a log line or an error: its password (in the authority or a
    `password=` parameter) replaced by `***`."""
    import re

    url = re.sub(r"(://[^/@:]*:)[^/]*@", r"\1***@", url)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)
