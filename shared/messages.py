"""Every message that crosses a socket, one tagged msgspec union per channel, msgpack-encoded.

Channels:
- control: `fleetctl` <-> supervisor (the control socket);
- broker: workers and the supervisor <-> broker (queue operations, leases, results);
- recorder: workers and the supervisor <-> recorder (events in, event queries);
- feed: the recorder's publish socket for live followers.

New fields always get defaults, so an older peer's message still decodes.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

from shared.models import (
    MAX_HOURS,
    AgentKind,
    EventRecord,
    ExecutionResult,
    FinishedOutcome,
    Id,
    Priority,
    ProcessView,
    ResumeFrom,
    ScheduleView,
    Seconds,
    TaskSpec,
    TaskState,
    TaskView,
    Text,
    UsageRow,
    WorkerView,
)

# A control request larger than this is refused: libzmq drops the connection of a peer that
# sends more, so `ControlClient` checks before sending and says so.
MAX_CONTROL_REQUEST_BYTES = 16 * 1024 * 1024
LIST_LIMIT_MAX = 10_000  # tasks in one TaskList
PAGE_LIMIT_MAX = 10_000  # events in one EventPage
MAX_SAY_CHARS = 100_000  # one `fleetctl say` message


class Message(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="msg"):
    """Root of every wire message; the class name is the tag."""


# --- requests a client may send to the control socket (some are forwarded) ---------------


class Enqueue(Message):
    """Add tasks; a task whose idempotency key is known returns the existing task."""

    tasks: list[TaskSpec]


class ListTasks(Message):
    """Tasks, newest first, optionally in one state; `before` pages on (ids below it); the
    rest narrow it: the agent, the repository, a label (`key=value`), words in the prompt."""

    state: TaskState | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=LIST_LIMIT_MAX)] = 50
    before: Id | None = None
    agent: AgentKind | None = None
    repo: Text | None = None
    label: Annotated[str, msgspec.Meta(pattern="^[^\\x00=]+=[^\\x00]*$")] | None = None
    search: Text | None = None


class ShowTask(Message):
    """One task with its executions."""

    task: Id


class CancelTask(Message):
    """Cancel a queued task, or end a running one's agent."""

    task: Id


class RetryTask(Message):
    """Queue a finished task again with one more attempt; `resume` continues its Codex thread."""

    task: Id
    resume: bool = False


class ListWorkers(Message):
    """The workers as the broker knows them."""


class GetEvents(Message):
    """A page of a task's stored events, after the given position (with `latest`: its last
    `limit` events, in order, whatever the position)."""

    task: Id
    after_execution: Id = 0
    after_seq: Id = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=PAGE_LIMIT_MAX)] = 2000
    latest: bool = False


class GetDiff(Message):
    """The patch an execution of a repository task committed (default: the latest one)."""

    task: Id
    execution: Id | None = None


class CollectWorkspaces(Message):
    """Remove worktrees of finished tasks (all, or those finished this long ago); branches stay."""

    older_than_hours: Annotated[float, msgspec.Meta(ge=0, le=MAX_HOURS)] | None = None


class GetStatus(Message):
    """Daemon pid, uptime, counts per state, processes, workers."""


class Drain(Message):
    """Stop dispatching, let running tasks finish, then exit."""


class Stop(Message):
    """Stop dispatching, end running agents, put their tasks back, exit."""

    timeout: Seconds | None = None


class GetRunTotals(Message):
    """What every finished run adds up to, for /metrics (forwarded to the broker)."""


class CountEvents(Message):
    """How many events the recorder has stored, for /metrics (forwarded to the recorder)."""


class SayToTask(Message):
    """Steer a running task's agent with a message (`fleetctl say`: codex app-server's
    turn/steer); kept as an event of its execution."""

    task: Id
    message: Annotated[Text, msgspec.Meta(min_length=1, max_length=MAX_SAY_CHARS)]


class InterruptTask(Message):
    """End the current turn of a running task's agent without killing it; the task then ends
    with what it has (`fleetctl interrupt`)."""

    task: Id


class SetPriority(Message):
    """Change a queued task's priority (higher runs first)."""

    task: Id
    priority: Priority


UsageGroup = Literal["agent", "label", "repo", "day", "task"]


class GetUsage(Message):
    """Tokens and cost of the executions finished since `since` (µs), grouped."""

    since: Id = 0
    by: UsageGroup = "agent"


class Reload(Message):
    """Read the config file again: limits, fleet budgets and prices change without a restart."""


class FindTasks(Message):
    """The tasks enqueued with these idempotency keys (those that exist), without executions."""

    keys: Annotated[list[Text], msgspec.Meta(max_length=LIST_LIMIT_MAX)]


ControlRequest = (
    GetRunTotals
    | CountEvents
    | Enqueue
    | ListTasks
    | ShowTask
    | CancelTask
    | RetryTask
    | ListWorkers
    | GetEvents
    | GetDiff
    | CollectWorkspaces
    | GetStatus
    | Drain
    | Stop
    | SayToTask
    | InterruptTask
    | SetPriority
    | GetUsage
    | Reload
    | FindTasks
)

# --- replies -------------------------------------------------------------------------------


class Enqueued(Message):
    """Ids of the tasks, in the order asked; `created` is False where a key matched."""

    ids: list[int]
    created: list[bool]


class TaskList(Message):
    tasks: list[TaskView]
    # The `before` of the next page, None when nothing older is left. A filtered listing looks
    # at a bounded window of ids per request, so it may hold fewer than `limit` and go on.
    next_before: int | None = None


class TaskDetail(Message):
    task: TaskView


class Cancelled(Message):
    """The task's state after the request; `running` if its agent is being ended."""

    task: int
    state: TaskState
    pending: bool = False


class Retried(Message):
    """The task is queued again; `resume` if its next attempt continues the Codex thread."""

    task: int
    state: TaskState
    resume: bool = False


class WorkerList(Message):
    workers: list[WorkerView]


class EventPage(Message):
    """Stored events in (execution, seq) order; `more` if the page was full."""

    events: list[EventRecord]
    more: bool


class QueueCounts(Message):
    """Tasks per state, and the broker's view of the workers."""

    counts: dict[str, int]
    workers: list[WorkerView]
    dispatching: bool
    schedule: ScheduleView | None = None
    # The workers of the other nodes sharing the queue, as their last heartbeat said.
    other_workers: list[WorkerView] = []


class TaskDiff(Message):
    """One execution's committed change: its branch, base and commit, and the patch."""

    task: int
    execution: int
    branch: str
    base: str
    commit: str | None
    patch: bytes


class WorkspacesCollected(Message):
    """Tasks whose worktrees were removed, and those skipped because a run holds them."""

    removed: list[int]
    busy: list[int] = []


class Status(Message):
    pid: int
    uptime_s: float
    state_dir: str
    dispatching: bool
    stopping: str | None
    counts: dict[str, int]
    processes: list[ProcessView]
    workers: list[WorkerView]
    feed: str
    warnings: list[str] = []
    # fleetd serves a listening socket systemd handed it (LISTEN_FDS): systemd, not fleetd,
    # owns the control socket, and any connection after fleetd exits starts it again.
    socket_activated: bool = False
    # fleetd's pid namespace (the inode of /proc/self/ns/pid, 0 if unknown): `pid` names a
    # process for a client only in the same namespace.
    pid_namespace: int = 0
    # The dashboard's address (`http://127.0.0.1:8765/`), None when web.listen is off or the
    # default port was taken.
    web_url: str | None = None
    schedule: ScheduleView | None = None  # limits in use, budgets spent, agents held back
    # The workers of the other nodes sharing the queue (`workers` are this node's own).
    other_workers: list[WorkerView] = []


class PrioritySet(Message):
    """A task's priority; `state` says whether it still mattered (only queued tasks wait)."""

    task: int
    state: TaskState
    priority: int


class Usage(Message):
    """`GetUsage`'s answer: one row per group, largest spend first."""

    rows: list[UsageRow]
    by: UsageGroup
    since: int


class Accepted(Message):
    """The request was taken; what follows happens in the background."""

    detail: str = ""


ErrorCode = Literal["bad_request", "not_found", "unavailable", "conflict", "internal"]


class ErrorReply(Message):
    """A request could not be served; `message` says what to do."""

    code: ErrorCode
    message: str


class Histogram(msgspec.Struct, frozen=True, kw_only=True):
    """Observations per bucket (`counts[i]`: at most `bounds[i]`, past the last: the rest),
    not cumulative, and their sum."""

    bounds: list[float]
    counts: list[int]
    total: float = 0.0


class RunTotals(Message):
    """Finished executions (every outcome but `running`) added up: the broker's counters,
    computed from queue.db, so that they survive a restart of any process."""

    runs: dict[str, dict[str, int]]  # agent -> outcome -> executions
    durations: dict[str, Histogram]  # agent -> seconds from agent start to end
    dispatch: Histogram  # first attempts: seconds from enqueue to claim
    tokens: dict[str, dict[str, int]]  # agent -> kind (input, output, ...) -> tokens
    failures: dict[str, int]  # failure class -> failed executions
    queue_oldest_us: int | None = None  # when the longest-waiting queued task was enqueued


class EventCount(Message):
    events: int


class Delivered(Message):
    """A message for a running agent went to the worker running this execution of the task."""

    task: int
    execution: int


ControlReply = (
    RunTotals
    | EventCount
    | Enqueued
    | TaskList
    | TaskDetail
    | Cancelled
    | Retried
    | WorkerList
    | EventPage
    | TaskDiff
    | WorkspacesCollected
    | Status
    | Accepted
    | ErrorReply
    | Delivered
    | PrioritySet
    | Usage
)

# --- broker channel --------------------------------------------------------------------------


class Ready(Message):
    """A worker is idle and wants a task (sent at start and after each result is acked)."""

    worker: str
    pid: int


class Heartbeat(Message):
    """A worker is alive; `execution` is what it runs (None when idle). Renews the lease."""

    worker: str
    pid: int
    execution: int | None = None
    # Executions whose agents ended and whose streams are being sealed (their Finished not yet
    # acknowledged): their leases are renewed too, and they do not keep the worker busy.
    sealing: list[int] = []
    lease: Id | None = None  # the execution's lease token (Assign.lease), the fence


class Assign(Message):
    """Run this task as this execution; the lease runs until `lease_expires_at` unless renewed."""

    task: int
    execution: int
    attempt: int
    spec: TaskSpec
    lease_expires_at: int
    resume: ResumeFrom | None = None  # continue this earlier attempt's Codex thread
    # The worker's last execution, whose Finished this Assign also acknowledges (FinishAck).
    acknowledges: int | None = None
    # The claim's lease token (the fence): the worker's Heartbeat, AgentStarted and Finished
    # carry it back, and the queue refuses them once another claim took the task over.
    lease: Id | None = None


class AgentStarted(Message):
    """The agent process of an execution started (for dispatch latency and the show view)."""

    execution: int
    started_at: int
    pid: int
    lease: Id | None = None  # Assign.lease


class Finished(Message):
    """An execution ended; resent until acknowledged."""

    execution: int
    outcome: FinishedOutcome
    result: ExecutionResult
    # The worker already said it is free (WorkerFree): claim nothing for it with this result.
    released: bool = False
    lease: Id | None = None  # Assign.lease: a stale one is refused (and acknowledged)


class WorkerFree(Message):
    """The agent of `execution` ended and its stream is being sealed: the worker takes its next
    task now, and reports `execution`'s Finished once the recorder has sealed the stream."""

    worker: str
    pid: int
    execution: int


class FinishAck(Message):
    execution: int


class CancelExecution(Message):
    """End the agent of this execution (broker -> worker)."""

    execution: int


class LeaseLost(Message):
    """This execution's lease is gone (broker -> worker): it was taken over, or this node lost
    the database for longer than a lease. The task may run elsewhere now: end the agent's
    group, as a cancel does, and report nothing more for it (the queue would refuse it)."""

    execution: int


class WorkerGone(Message):
    """The supervisor saw a worker die: its executions are lost."""

    worker: str
    reason: str


class SetDispatch(Message):
    """Start or stop handing out tasks."""

    dispatching: bool


class GetCounts(Message):
    """Counts per state and the workers (supervisor -> broker, for status)."""


class SteerExecution(Message):
    """Say `message` to the agent of this execution (broker -> worker)."""

    execution: int
    message: str


class InterruptExecution(Message):
    """End the current turn of this execution's agent (broker -> worker)."""

    execution: int


class SetSchedule(Message):
    """The reloaded `[limits]`, `[budget]` and `[prices]` (supervisor -> broker), as TOML-shaped
    tables the broker converts with the config's own types."""

    limits: dict[str, int] = {}
    budget: dict[str, Any] = {}


BrokerRequest = (
    GetRunTotals
    | Ready
    | Heartbeat
    | AgentStarted
    | Finished
    | Enqueue
    | ListTasks
    | ShowTask
    | CancelTask
    | RetryTask
    | ListWorkers
    | WorkerGone
    | SetDispatch
    | GetCounts
    | SayToTask
    | InterruptTask
    | SetPriority
    | GetUsage
    | SetSchedule
    | FindTasks
    | WorkerFree
)
BrokerReply = (
    RunTotals
    | Assign
    | FinishAck
    | CancelExecution
    | Enqueued
    | TaskList
    | TaskDetail
    | Cancelled
    | Retried
    | WorkerList
    | QueueCounts
    | Accepted
    | ErrorReply
    | Delivered
    | SteerExecution
    | InterruptExecution
    | PrioritySet
    | Usage
    | LeaseLost
)

# --- recorder channel ------------------------------------------------------------------------


class EventBatch(Message):
    """Consecutive events of one execution (worker -> recorder, and recorder -> feed)."""

    task: int
    execution: int
    events: list[EventRecord]


class StreamEnd(Message):
    """The agent of an execution ended after printing `last_seq` events; seal the stream."""

    task: int
    execution: int
    last_seq: int
    spool: str


class StreamSealed(Message):
    """Every event of the execution is stored (recorder -> worker, and -> feed)."""

    task: int
    execution: int
    last_seq: int


RecorderRequest = EventBatch | StreamEnd | GetEvents | CountEvents
RecorderReply = StreamSealed | EventPage | ErrorReply | EventCount
FeedMessage = EventBatch | StreamSealed


T = TypeVar("T")


def feed_topic(task: int) -> bytes:
    """Feed topic of a task; the trailing dot keeps task 1 from matching task 12."""
    return b"t%d." % task


class Codec(Generic[T]):
    """An encoder and a decoder for one channel, built once."""

    def __init__(self, union: Any) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(union)

    def encode(self, message: Message) -> bytes:
        return self._encoder.encode(message)

    def checked(self, message: Message) -> bytes:
        """`message` encoded, after the checks its receiver's decoder makes (bounds, UTF-8):
        a client refuses locally, with the words the daemon would use, what it would refuse."""
        try:
            data = self._encoder.encode(message)
        except UnicodeEncodeError as exc:
            raise msgspec.ValidationError("a text value is not valid UTF-8") from exc
        except OverflowError as exc:
            raise msgspec.ValidationError("a number is out of range (64 bits)") from exc
        self.decode(data)
        return data

    def decode(self, data: bytes | memoryview) -> T:
        """Decode one message; raises msgspec.DecodeError (a ValidationError too) if malformed."""
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise msgspec.ValidationError(plain_words(str(exc))) from None
        except (UnicodeDecodeError, RecursionError) as exc:
            # msgspec lets these through for a non-UTF-8 str or absurdly deep nesting.
            raise msgspec.DecodeError(f"malformed message: {exc}") from exc


def plain_words(error: str) -> str:
    """A decoder's error with its bound patterns in words (the NUL check is a regex)."""
    words = error.replace("matching regex '^[^\\\\x00]*$'", "without a NUL byte")
    return words.replace("Expected `float`", "Expected a finite number")


# One codec per channel, built on first use and kept: building one costs about 0.25 ms, and a
# `fleetctl` command needs two of the seven.
CONTROL_REQUESTS: Codec[ControlRequest]
CONTROL_REPLIES: Codec[ControlReply]
BROKER_REQUESTS: Codec[BrokerRequest]
BROKER_REPLIES: Codec[BrokerReply]
RECORDER_REQUESTS: Codec[RecorderRequest]
RECORDER_REPLIES: Codec[RecorderReply]
FEED: Codec[FeedMessage]

_CHANNELS: dict[str, Any] = {
    "CONTROL_REQUESTS": ControlRequest,
    "CONTROL_REPLIES": ControlReply,
    "BROKER_REQUESTS": BrokerRequest,
    "BROKER_REPLIES": BrokerReply,
    "RECORDER_REQUESTS": RecorderRequest,
    "RECORDER_REPLIES": RecorderReply,
    "FEED": FeedMessage,
}


def __getattr__(name: str) -> Codec[Any]:
    """A channel's codec, the first time it is asked for (PEP 562); a global from then on."""
    union = _CHANNELS.get(name)
    if union is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    codec: Codec[Any] = Codec(union)
    globals()[name] = codec
    return codec
