"""The wire: every message round-trips through its channel's codec; bad input is a DecodeError."""

from __future__ import annotations

import random
import typing

import msgspec
import pytest

from shared import messages as m
from shared.models import (
    EventRecord,
    ExecutionResult,
    ExecutionView,
    ProcessView,
    ResumeFrom,
    TaskSpec,
    TaskView,
    TokenUsage,
    UsageRow,
    WorkerView,
)

SPEC = TaskSpec(
    prompt="write hello.txt",
    agent="command",
    argv=["sh", "-c", "echo hi"],
    cwd="/tmp/work",
    model="gpt-test",
    timeout=12.5,
    max_attempts=2,
    key="k-1",
    labels={"team": "infra"},
    sandbox="read-only",
    reasoning_effort="high",
    codex_config=["model_verbosity=low"],
)
RESULT = ExecutionResult(
    exit_code=1,
    signal=15,
    final_message="done",
    usage=TokenUsage(input_tokens=20, output_tokens=10, total_tokens=30),
    duration_s=1.5,
    events=7,
    commands=2,
    failed_commands=1,
    thread_id="thread-1",
    error="boom",
    reason="why",
    stderr_tail="tail",
)
EXECUTION = ExecutionView(
    id=4,
    attempt=2,
    worker="w1",
    outcome="lost",
    claimed_at=100,
    started_at=110,
    finished_at=120,
    result=RESULT,
)
TASK = TaskView(
    id=3,
    state="failed",
    spec=SPEC,
    attempts=2,
    enqueued_at=50,
    started_at=100,
    finished_at=120,
    result=RESULT,
    executions=[EXECUTION],
    not_before=130,
)
WORKER = WorkerView(id="w1", pid=42, state="busy", task=3, execution=4, since=99)
EVENT = EventRecord(execution=4, seq=1, ts=123, type="turn.started", flags=1, payload=b"\x00\xff")

# One instance of every message type, with no field left at its default.
SAMPLES: dict[type, m.Message] = {
    m.Enqueue: m.Enqueue(tasks=[SPEC, TaskSpec(prompt="second")]),
    m.ListTasks: m.ListTasks(state="running", limit=5),
    m.ShowTask: m.ShowTask(task=3),
    m.CancelTask: m.CancelTask(task=3),
    m.RetryTask: m.RetryTask(task=3, resume=True),
    m.ListWorkers: m.ListWorkers(),
    m.GetEvents: m.GetEvents(task=3, after_execution=4, after_seq=9, limit=10),
    m.GetDiff: m.GetDiff(task=3, execution=4),
    m.CollectWorkspaces: m.CollectWorkspaces(older_than_hours=2.5),
    m.GetStatus: m.GetStatus(),
    m.Drain: m.Drain(),
    m.Stop: m.Stop(timeout=5.0),
    m.GetRunTotals: m.GetRunTotals(),
    m.CountEvents: m.CountEvents(),
    m.RunTotals: m.RunTotals(
        runs={"codex": {"succeeded": 3}},
        durations={"codex": m.Histogram(bounds=[1.0], counts=[1, 2], total=9.5)},
        dispatch=m.Histogram(bounds=[0.1], counts=[3, 0], total=0.05),
        tokens={"codex": {"input": 10}},
        failures={"agent": 1},
        queue_oldest_us=5,
    ),
    m.EventCount: m.EventCount(events=12),
    m.Enqueued: m.Enqueued(ids=[1, 2], created=[True, False]),
    m.TaskList: m.TaskList(tasks=[TASK]),
    m.TaskDetail: m.TaskDetail(task=TASK),
    m.Cancelled: m.Cancelled(task=3, state="running", pending=True),
    m.Retried: m.Retried(task=3, state="queued", resume=True),
    m.WorkerList: m.WorkerList(workers=[WORKER]),
    m.EventPage: m.EventPage(events=[EVENT], more=True),
    m.QueueCounts: m.QueueCounts(counts={"queued": 2}, workers=[WORKER], dispatching=False),
    m.Status: m.Status(
        pid=10,
        uptime_s=3.5,
        state_dir="/state",
        dispatching=True,
        stopping="drain",
        counts={"running": 1},
        processes=[ProcessView(role="broker", pid=11, alive=True, restarts=2)],
        workers=[WORKER],
        feed="ipc:///state/run/feed.sock",
        warnings=["low disk"],
    ),
    m.TaskDiff: m.TaskDiff(
        task=3, execution=4, branch="fleet/3", base="b" * 40, commit="c" * 40, patch=b"diff\xff"
    ),
    m.WorkspacesCollected: m.WorkspacesCollected(removed=[1, 2], busy=[3]),
    m.Accepted: m.Accepted(detail="stopping"),
    m.ErrorReply: m.ErrorReply(code="not_found", message="no task 9"),
    m.Ready: m.Ready(worker="w1", pid=42),
    m.Heartbeat: m.Heartbeat(worker="w1", pid=42, execution=4),
    m.Assign: m.Assign(
        task=3,
        execution=4,
        attempt=2,
        spec=SPEC,
        lease_expires_at=999,
        resume=ResumeFrom(
            execution=2, thread_id="thread-1", workspace="/ws/3", session_file="/s.jsonl"
        ),
    ),
    m.AgentStarted: m.AgentStarted(execution=4, started_at=110, pid=43),
    m.Finished: m.Finished(execution=4, outcome="timed_out", result=RESULT),
    m.FinishAck: m.FinishAck(execution=4),
    m.WorkerFree: m.WorkerFree(worker="w1", pid=42, execution=4),
    m.CancelExecution: m.CancelExecution(execution=4),
    m.LeaseLost: m.LeaseLost(execution=4),
    m.WorkerGone: m.WorkerGone(worker="w1", reason="exit 1"),
    m.SetDispatch: m.SetDispatch(dispatching=False),
    m.GetCounts: m.GetCounts(),
    m.SetPriority: m.SetPriority(task=3, priority=-2),
    m.GetUsage: m.GetUsage(since=5, by="day"),
    m.Reload: m.Reload(),
    m.PrioritySet: m.PrioritySet(task=3, state="queued", priority=4),
    m.Usage: m.Usage(
        rows=[UsageRow(key="codex", executions=2, tasks=1, tokens=258, cost_usd=0.01)],
        by="agent",
        since=0,
    ),
    m.SetSchedule: m.SetSchedule(limits={"agent:claude": 2}, budget={"cost_per_day": 5.0}),
    m.EventBatch: m.EventBatch(task=3, execution=4, events=[EVENT]),
    m.StreamEnd: m.StreamEnd(task=3, execution=4, last_seq=7, spool="/state/spool/4.spool"),
    m.StreamSealed: m.StreamSealed(task=3, execution=4, last_seq=7),
    m.SayToTask: m.SayToTask(task=3, message="use the blue paint"),
    m.InterruptTask: m.InterruptTask(task=3),
    m.Delivered: m.Delivered(task=3, execution=4),
    m.SteerExecution: m.SteerExecution(execution=4, message="use the blue paint"),
    m.InterruptExecution: m.InterruptExecution(execution=4),
    m.FindTasks: m.FindTasks(keys=["github:o/r#1"]),
}

CHANNELS = {
    "control_request": (m.CONTROL_REQUESTS, m.ControlRequest),
    "control_reply": (m.CONTROL_REPLIES, m.ControlReply),
    "broker_request": (m.BROKER_REQUESTS, m.BrokerRequest),
    "broker_reply": (m.BROKER_REPLIES, m.BrokerReply),
    "recorder_request": (m.RECORDER_REQUESTS, m.RecorderRequest),
    "recorder_reply": (m.RECORDER_REPLIES, m.RecorderReply),
    "feed": (m.FEED, m.FeedMessage),
}

CASES = [
    pytest.param(codec, member, id=f"{name}-{member.__name__}")
    for name, (codec, union) in CHANNELS.items()
    for member in typing.get_args(union)
]


def test_samples_cover_every_message_type() -> None:
    assert set(SAMPLES) == set(m.Message.__subclasses__())


def test_every_message_type_is_on_some_channel() -> None:
    on_channels = {member for _, union in CHANNELS.values() for member in typing.get_args(union)}
    assert on_channels == set(m.Message.__subclasses__())


@pytest.mark.parametrize(("codec", "member"), CASES)
def test_message_round_trips_through_its_channel(codec, member) -> None:
    message = SAMPLES[member]
    decoded = codec.decode(codec.encode(message))
    assert type(decoded) is member
    assert decoded == message


def test_assign_from_an_older_broker_has_no_resume() -> None:
    class OldAssign(msgspec.Struct, frozen=True, kw_only=True, tag="Assign", tag_field="msg"):
        task: int
        execution: int
        attempt: int
        spec: TaskSpec
        lease_expires_at: int

    old = OldAssign(task=3, execution=4, attempt=1, spec=SPEC, lease_expires_at=9)
    decoded = m.BROKER_REPLIES.decode(msgspec.msgpack.encode(old))
    assert isinstance(decoded, m.Assign) and decoded.resume is None


def test_round_trip_keeps_bytes_payload_exact() -> None:
    codec = m.RECORDER_REQUESTS
    decoded = codec.decode(codec.encode(SAMPLES[m.EventBatch]))
    assert decoded.events[0].payload == b"\x00\xff"


def test_message_carries_its_class_name_as_tag() -> None:
    raw = msgspec.msgpack.decode(m.BROKER_REQUESTS.encode(m.FinishAck(execution=4)))
    assert raw == {"msg": "FinishAck", "execution": 4}


def test_missing_defaulted_field_decodes_to_its_default() -> None:
    payload = msgspec.msgpack.encode({"msg": "Heartbeat", "worker": "w1", "pid": 1})
    assert m.BROKER_REQUESTS.decode(payload) == m.Heartbeat(worker="w1", pid=1)


def test_message_of_another_channel_is_rejected() -> None:
    payload = m.BROKER_REQUESTS.encode(m.Ready(worker="w1", pid=1))
    with pytest.raises(msgspec.ValidationError):
        m.CONTROL_REQUESTS.decode(payload)


def test_unknown_tag_is_rejected() -> None:
    payload = msgspec.msgpack.encode({"msg": "Explode", "task": 1})
    with pytest.raises(msgspec.ValidationError, match="Explode"):
        m.CONTROL_REQUESTS.decode(payload)


def test_missing_tag_is_rejected() -> None:
    payload = msgspec.msgpack.encode({"task": 1})
    with pytest.raises(msgspec.ValidationError):
        m.CONTROL_REQUESTS.decode(payload)


def test_wrong_field_type_is_rejected_naming_the_field() -> None:
    payload = msgspec.msgpack.encode({"msg": "ShowTask", "task": "three"})
    with pytest.raises(msgspec.ValidationError, match=r"\$\.task"):
        m.CONTROL_REQUESTS.decode(payload)


def test_missing_required_field_is_rejected() -> None:
    payload = msgspec.msgpack.encode({"msg": "Ready", "worker": "w1"})
    with pytest.raises(msgspec.ValidationError, match="pid"):
        m.BROKER_REQUESTS.decode(payload)


def test_invalid_literal_value_is_rejected() -> None:
    payload = msgspec.msgpack.encode(
        {"msg": "Finished", "execution": 1, "outcome": "exploded", "result": {}}
    )
    with pytest.raises(msgspec.ValidationError):
        m.BROKER_REQUESTS.decode(payload)


def test_non_map_payload_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        m.BROKER_REQUESTS.decode(msgspec.msgpack.encode([1, 2, 3]))


def test_empty_payload_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        m.BROKER_REQUESTS.decode(b"")


def test_truncated_payload_is_a_decode_error() -> None:
    payload = m.BROKER_REQUESTS.encode(SAMPLES[m.Finished])
    for cut in range(len(payload)):
        with pytest.raises(msgspec.DecodeError):
            m.BROKER_REQUESTS.decode(payload[:cut])


def test_trailing_garbage_is_a_decode_error() -> None:
    payload = m.BROKER_REQUESTS.encode(m.FinishAck(execution=1)) + b"\x00"
    with pytest.raises(msgspec.DecodeError):
        m.BROKER_REQUESTS.decode(payload)


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_random_bytes_raise_only_decode_errors(name: str) -> None:
    codec = CHANNELS[name][0]
    rng = random.Random(name)
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(0, 64))
        try:
            codec.decode(data)
        except msgspec.DecodeError:
            continue


def test_string_field_that_is_not_utf8_is_a_decode_error() -> None:
    # {msg: Ready, worker: "\xff", pid: 1}
    payload = b"\x83\xa3msg\xa5Ready\xa6worker\xa1\xff\xa3pid\x01"
    with pytest.raises(msgspec.DecodeError):
        m.BROKER_REQUESTS.decode(payload)


def test_flipped_bytes_of_valid_messages_raise_only_decode_errors() -> None:
    rng = random.Random(7)
    for codec, union in CHANNELS.values():
        for member in typing.get_args(union):
            payload = codec.encode(SAMPLES[member])
            for _ in range(200):
                mutated = bytearray(payload)
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
                try:
                    codec.decode(bytes(mutated))
                except msgspec.DecodeError:
                    continue


def test_deeply_nested_unknown_field_is_a_decode_error() -> None:
    # A map {msg: Ready, worker: w, pid: 1, x: [[[...[0]...]]]}: the unknown field is skipped,
    # but skipping it recurses past msgspec's depth limit.
    nested = b"\x91" * 2000 + b"\x00"
    payload = b"\x84\xa3msg\xa5Ready\xa6worker\xa1w\xa3pid\x01\xa1x" + nested
    with pytest.raises(msgspec.DecodeError):
        m.BROKER_REQUESTS.decode(payload)


def test_feed_topic_of_task_1_is_not_a_prefix_of_task_12() -> None:
    assert m.feed_topic(1) == b"t1."
    assert not m.feed_topic(12).startswith(m.feed_topic(1))


def test_feed_topics_of_distinct_tasks_are_never_prefixes() -> None:
    topics = [m.feed_topic(task) for task in range(1, 200)]
    clashes = [(a, b) for a in topics for b in topics if a != b and b.startswith(a)]
    assert clashes == []


def test_messages_are_frozen() -> None:
    with pytest.raises(AttributeError):
        m.ShowTask(task=1).task = 2  # type: ignore[misc]


# --- value bounds: out-of-range values are refused at decode, by every decoder ---------------

NAN, INF = float("nan"), float("inf")
OUT_OF_BOUNDS = [
    m.GetEvents(task=1, after_seq=2**63),
    m.GetEvents(task=2**63),
    m.GetEvents(task=1, limit=m.PAGE_LIMIT_MAX + 1),
    m.ShowTask(task=2**63),
    m.CancelTask(task=-1),
    m.RetryTask(task=2**63),
    m.GetDiff(task=1, execution=2**63),
    m.ListTasks(limit=m.LIST_LIMIT_MAX + 1),
    m.ListTasks(limit=0),
    m.CollectWorkspaces(older_than_hours=NAN),
    m.CollectWorkspaces(older_than_hours=INF),
    m.CollectWorkspaces(older_than_hours=1e300),
    m.Stop(timeout=NAN),
    m.Stop(timeout=INF),
    m.Enqueue(tasks=[TaskSpec(prompt="p", timeout=NAN)]),
    m.Enqueue(tasks=[TaskSpec(prompt="p", idle_timeout=INF)]),
    m.Enqueue(tasks=[TaskSpec(prompt="p", max_attempts=2**63)]),
    m.Enqueue(tasks=[TaskSpec(prompt="nul", agent="command", argv=["echo", "a\x00b"])]),
    m.Enqueue(tasks=[TaskSpec(prompt="p\x00")]),
    m.Enqueue(tasks=[TaskSpec(prompt="p", labels={"k\x00": "v"})]),
]


@pytest.mark.parametrize("request_", OUT_OF_BOUNDS, ids=repr)
def test_values_out_of_bounds_are_a_validation_error_at_decode(request_: m.Message) -> None:
    data = m.CONTROL_REQUESTS.encode(request_)  # encoding checks nothing: any peer may send it
    with pytest.raises(msgspec.ValidationError):
        m.CONTROL_REQUESTS.decode(data)
    if not isinstance(request_, m.GetEvents | m.GetDiff | m.CollectWorkspaces | m.Stop):
        with pytest.raises(msgspec.ValidationError):
            m.BROKER_REQUESTS.decode(data)


def test_a_nul_byte_is_named_in_words() -> None:
    request = m.Enqueue(tasks=[TaskSpec(prompt="p", agent="command", argv=["a\x00"])])
    with pytest.raises(msgspec.ValidationError, match=r"without a NUL byte - at `\$.tasks\[0\]"):
        m.CONTROL_REQUESTS.decode(m.CONTROL_REQUESTS.encode(request))


@pytest.mark.parametrize(
    "request_, words",
    [
        (m.ShowTask(task=2**64), "out of range"),
        (m.Enqueue(tasks=[TaskSpec(prompt="\udcff")]), "not valid UTF-8"),
        (m.Stop(timeout=NAN), "finite number"),
    ],
)
def test_checked_refuses_what_the_receiver_would(request_: m.Message, words: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=words):
        m.CONTROL_REQUESTS.checked(request_)


def test_checked_passes_a_valid_request_encoded() -> None:
    request = m.Enqueue(tasks=[SPEC])
    assert m.CONTROL_REQUESTS.decode(m.CONTROL_REQUESTS.checked(request)) == request
