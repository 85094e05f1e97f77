"""Domain records shared by the daemon and the CLI: tasks, executions, results, workers, events."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Literal

import msgspec

TaskState = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]
TASK_STATES: tuple[TaskState, ...] = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
)
TERMINAL_STATES: frozenset[TaskState] = frozenset({"succeeded", "failed", "cancelled", "timed_out"})

# How one attempt ended. `lost`: its worker died or stopped answering; `interrupted`: the fleet
# was stopped and the task went back to the queue without spending an attempt.
ExecutionOutcome = Literal[
    "running", "succeeded", "failed", "cancelled", "timed_out", "lost", "interrupted"
]
# How a worker reports that an execution ended (`lost` is the queue's verdict, never a worker's).
FinishedOutcome = Literal["succeeded", "failed", "cancelled", "timed_out", "interrupted"]

# The agent a task names: an adapter installed under that name in the `agent_fleet.agents`
# entry points (`fleetd.agents`); these three come with agent-fleet.
AgentKind = Annotated[str, msgspec.Meta(pattern="^[a-z][a-z0-9_-]{0,39}\\Z")]
BUILT_IN_AGENTS: tuple[str, ...] = ("codex", "claude", "command")
SandboxMode = Literal["read-only", "workspace-write", "danger-full-access"]
TimeoutKind = Literal["wall", "idle"]
ClaudePermissionMode = Literal["default", "acceptEdits", "plan", "bypassPermissions"]


# --- value bounds, checked by every decoder (the daemon's and fleetctl's) --------------------
# A value out of bounds gets the typed `bad_request` reply at decode, never an exception deep
# inside (SQLite takes signed 64-bit integers; a NUL byte cannot be in an argv or a path; a
# NaN or infinite number of seconds is no limit at all).

INT64_MAX = 2**63 - 1
MAX_SECONDS = 366 * 24 * 3600.0  # a year: longer limits are surely a typo
MAX_HOURS = 100 * 366 * 24.0  # a century of worktree age
MAX_ATTEMPTS = 1000
MAX_TURNS = 1000

Id = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]  # a task, an execution, a position
Seconds = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
Attempts = Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPTS)]
Text = Annotated[str, msgspec.Meta(pattern="^[^\\x00]*$")]  # no NUL byte
PRIORITY_BOUND = 1_000_000
Priority = Annotated[int, msgspec.Meta(ge=-PRIORITY_BOUND, le=PRIORITY_BOUND)]
# A fleetd's node name (`node.name`): short and safe in a path, a log line and a table cell.
NODE_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\\Z"
NodeName = Annotated[str, msgspec.Meta(pattern=NODE_NAME_PATTERN)]


def now_us() -> int:
    """Wall-clock time in integer microseconds since the Unix epoch (the stored time unit)."""
    return time.time_ns() // 1000


def rfc3339(us: int | None) -> str | None:
    """Format stored microseconds as RFC 3339 UTC with microseconds, or None."""
    if us is None:
        return None
    stamp = dt.datetime.fromtimestamp(us / 1_000_000, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TaskSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a user asked for: everything needed to run the task, nothing about its progress.

    Its bounds are checked wherever it is decoded (`validated` for one built in Python).
    """

    prompt: Text
    agent: AgentKind = "codex"
    argv: list[Text] = []
    cwd: Text | None = None
    model: Text | None = None
    timeout: Seconds | None = None
    max_attempts: Attempts | None = None
    key: Text | None = None
    labels: dict[Text, Text] = {}
    sandbox: SandboxMode | None = None
    reasoning_effort: Text | None = None
    codex_config: list[Text] = []  # `-c KEY=VALUE` overrides for this task's Codex run
    repo: Text | None = None  # a git repository (path or URL): the task runs in its own worktree
    ref: Text | None = None  # where the task's branch starts (default: the repository's HEAD)
    idle_timeout: Seconds | None = None  # seconds without output before the run is ended
    # Codex app-server: most turns on the thread (continued while the agent says more remains)
    max_turns: Annotated[int, msgspec.Meta(ge=1, le=MAX_TURNS)] | None = None
    # Scheduling (issue 11): higher priority first, FIFO within one; not claimed before
    # `not_before` (µs since the epoch); only once the `after` tasks succeeded (or ended at
    # all, with `after_any`); the run is ended once past `max_tokens` or `max_cost` (USD).
    priority: Priority = 0
    not_before: Id | None = None
    after: list[Id] = []
    after_any: bool = False
    # Continue the agent's thread of this earlier task (its latest run's Codex thread or Claude
    # session) with this prompt, as the tracker's follow-ups do; a fresh run when that task ran
    # another agent or left no thread.
    continues: Id | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)] | None = None
    max_cost: Annotated[float, msgspec.Meta(gt=0, le=1e9)] | None = None
    # Claude Code: the tools this task may use, and its permission mode (else `[claude]`'s)
    allowed_tools: list[Text] = []
    permission_mode: ClaudePermissionMode | None = None


class TokenUsage(msgspec.Struct, kw_only=True):
    """Token counts of one run (or, as `thread_usage`, of a whole Codex thread)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0
    total_tokens: int = 0


# `budget`: the run was ended for spending past its token or cost budget (never retried).
FailureClass = Literal["transient", "permanent", "agent", "budget"]


class FileChange(msgspec.Struct, kw_only=True, array_like=True):
    """One file of a diff: path, lines added, lines removed (None for binary files)."""

    path: str
    insertions: int | None
    deletions: int | None


class DiffSummary(msgspec.Struct, kw_only=True):
    """What a task changed on its branch, from its base commit."""

    files: list[FileChange] = []
    insertions: int = 0
    deletions: int = 0


class WorkspaceResult(msgspec.Struct, kw_only=True):
    """Where a repository task ran and what it left: its branch, commit and diff."""

    path: str
    branch: str
    base: str
    commit: str | None = None
    diff: DiffSummary = msgspec.field(default_factory=DiffSummary)
    patch_file: str | None = None


class ExecutionResult(msgspec.Struct, kw_only=True):
    """What one agent run produced, as the worker saw it."""

    exit_code: int | None = None
    signal: int | None = None
    final_message: str | None = None
    usage: TokenUsage = msgspec.field(default_factory=TokenUsage)
    duration_s: float = 0.0
    events: int = 0
    commands: int = 0
    failed_commands: int = 0
    thread_id: str | None = None
    error: str | None = None
    reason: str | None = None
    failure_class: FailureClass | None = None
    timeout_kind: TimeoutKind | None = None
    stderr_tail: str | None = None
    session_file: str | None = None
    workspace: WorkspaceResult | None = None
    cost_usd: float | None = None  # what the agent says the run cost (Claude Code reports it)
    turns: int | None = None  # the agent's turns, as it counts them (Claude Code)
    # The Codex thread's running total when the run ended (what codex reports); `usage` is the
    # part this run added, so a resumed thread's earlier tokens are not counted twice.
    thread_usage: TokenUsage | None = None
    rate_limited: bool = False  # the model provider refused for a rate limit (a 429)


class ResumeFrom(msgspec.Struct, kw_only=True):
    """A previous attempt whose Codex thread a new attempt continues (`codex exec resume`)."""

    execution: int
    thread_id: str
    workspace: str | None = None  # that attempt's worktree (result.workspace.path), if any
    session_file: str | None = None  # that attempt's Codex session file, if known
    thread_usage: TokenUsage | None = None  # the thread's tokens when that attempt ended


class ExecutionView(msgspec.Struct, kw_only=True):
    """One attempt at a task."""

    id: int
    attempt: int
    worker: str | None
    outcome: ExecutionOutcome
    claimed_at: int
    started_at: int | None = None
    finished_at: int | None = None
    result: ExecutionResult | None = None
    node: str | None = None  # the fleetd (`node.name`) that claimed it


class TaskView(msgspec.Struct, kw_only=True):
    """A task with its state and, when asked for, its executions."""

    id: int
    state: TaskState
    spec: TaskSpec
    attempts: int
    enqueued_at: int
    started_at: int | None = None
    finished_at: int | None = None
    result: ExecutionResult | None = None
    executions: list[ExecutionView] = []
    not_before: int | None = None  # a queued task waiting to retry: not claimed before this
    priority: int = 0  # the current priority (`fleetctl priority` changes it)
    waiting: int = 0  # how many of its `after` tasks have not ended as it needs


class WorkerView(msgspec.Struct, kw_only=True):
    """One worker as the broker last heard from it."""

    id: str
    pid: int | None
    state: Literal["idle", "busy", "starting"]
    task: int | None = None
    execution: int | None = None
    since: int
    node: str | None = None  # the fleetd (`node.name`) it runs in
    # When its node was last heard of (`nodes` table), for another node's workers; None: this
    # node's own, as its broker sees them.
    seen_at: int | None = None
    lost: bool = False  # its node has not been heard of for longer than a lease


class ProcessView(msgspec.Struct, kw_only=True):
    """One child process of the supervisor."""

    role: str
    pid: int | None
    alive: bool
    restarts: int = 0
    worker: str | None = None  # a worker's id (`w3`, as in `fleetctl workers`)


class EventRecord(msgspec.Struct, array_like=True):
    """One line an agent printed: the unit the recorder stores and publishes."""

    execution: int
    seq: int
    ts: int
    type: str
    flags: int
    payload: bytes


# Event flags: what was odd about the line, so it is kept as is rather than dropped.
FLAG_NOT_JSON = 1
FLAG_NOT_UTF8 = 2
FLAG_HUGE = 4  # too large to parse; stored whole, unparsed
FLAG_PARTIAL = 8  # one piece of a line longer than the worker's line limit
FLAG_NO_NEWLINE = 16  # the agent's last output did not end with a newline
FLAG_REDACTED = 32  # a secret value was masked in this line


def flag_names(flags: int) -> list[str]:
    """Names of the flags set in `flags`, for humans and JSON output."""
    names = {
        FLAG_NOT_JSON: "not_json",
        FLAG_NOT_UTF8: "not_utf8",
        FLAG_HUGE: "huge",
        FLAG_PARTIAL: "partial",
        FLAG_NO_NEWLINE: "no_newline",
        FLAG_REDACTED: "redacted",
    }
    return [name for bit, name in names.items() if flags & bit]


def spec_problem(spec: TaskSpec) -> str | None:
    """Why a task cannot be run as given, in words for the user; None if it can."""
    if spec.agent == "command" and not spec.argv:
        return "a command task needs its argv: `fleetctl enqueue PROMPT --agent command -- ARGV...`"
    if spec.agent != "command" and not spec.prompt.strip():
        return f"a {spec.agent} task needs a prompt"
    if (spec.allowed_tools or spec.permission_mode) and spec.agent != "claude":
        return "--allowed-tool and --permission-mode are for `--agent claude` tasks"
    if spec.max_turns is not None and spec.agent not in ("codex", "claude"):
        return "--max-turns is for codex (codex.mode = app-server) and claude tasks"
    if spec.agent != "command" and spec.argv:
        return "argv (after `--`) is only for `--agent command` tasks"
    if spec.timeout is not None and spec.timeout <= 0:
        return "timeout must be a positive number of seconds"
    if spec.idle_timeout is not None and spec.idle_timeout <= 0:
        return "idle timeout must be a positive number of seconds"
    if spec.ref is not None and spec.repo is None:
        return "--ref needs --repo"
    if spec.repo is not None and spec.cwd is not None:
        return "give either --repo (a worktree is made for the task) or --cwd, not both"
    if spec.max_attempts is not None and spec.max_attempts < 1:
        return "max_attempts must be at least 1"
    if spec.after_any and not spec.after:
        return "--after-any needs --after TASK"
    bad = [item for item in spec.codex_config if "=" not in item or item.startswith("=")]
    if bad:
        return f"codex config overrides take KEY=VALUE, got {bad[0]!r}"
    return None


# --- scheduling (issue 11): what `status` and `usage` show ------------------------------------


class LimitUse(msgspec.Struct, kw_only=True):
    """One `[limits]` selector: how many running tasks it counts, of how many allowed."""

    selector: str
    running: int
    limit: int


class HoldView(msgspec.Struct, kw_only=True):
    """Tasks of a scope start nothing until `until` (µs): a spent budget, a rate limit."""

    scope: str
    until: int
    why: str


class ScheduleView(msgspec.Struct, kw_only=True):
    limits: list[LimitUse] = []
    holds: list[HoldView] = []


class UsageRow(msgspec.Struct, kw_only=True):
    """Tokens and cost of the executions that finished in one group (an agent, a day...)."""

    key: str
    executions: int
    tasks: int
    tokens: int
    cost_usd: float
