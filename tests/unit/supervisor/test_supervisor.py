"""The supervisor's socket-free logic: control requests routed, answers matched, child exits,
workspace gc off the loop, timers; time passed explicitly."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.agents.codex_home import MISSING_CREDENTIAL
from fleetd.supervisor.children import Child, CrashLoop
from fleetd.supervisor.forwarding import FORWARD_TIMEOUT, Outgoing, Peer
from fleetd.supervisor.logic import RETENTION_CHECK_SECONDS, Supervisor
from fleetd.supervisor.shutdown import Phase
from shared import messages as m
from shared.config import load_config
from shared.models import TaskSpec
from tests.support.inline_job import InlineJob
from tests.unit.supervisor.fakes import TERM, FakeChildren, FakeNotifier

NOW = 100.0
CLIENT = b"client-1"
KEY = {"OPENAI_API_KEY": "sk-test-supervisor-0123456789"}


def supervisor_with(tmp_path: Path, env: dict[str, str], **extra: object) -> Supervisor:
    config = load_config({"HOME": str(tmp_path)}, None, {"state_dir": str(tmp_path / "s")})
    config.paths().create()
    full_env = {"HOME": str(tmp_path), **env}
    return Supervisor(config, full_env, FakeChildren(), FakeNotifier(), InlineJob(), pid=7)


@pytest.fixture
def supervisor(tmp_path: Path) -> Supervisor:
    made = supervisor_with(tmp_path, KEY)
    made.start(NOW)
    return made


def to(out: list[Outgoing], peer: Peer) -> list[m.Message]:
    return [o.message for o in out if o.to is peer]


def answer(supervisor: Supervisor, out: list[Outgoing], reply: m.Message) -> list[Outgoing]:
    """The broker (or recorder) answers the one request in `out`."""
    [request] = [o for o in out if o.to is not Peer.CLIENT]
    return supervisor.on_answer(request.ident, reply, NOW)


def counts(**per_state: int) -> m.QueueCounts:
    return m.QueueCounts(counts=per_state, workers=[], dispatching=True)


# --- start ----------------------------------------------------------------------------------


def test_ready_is_told_once_the_broker_answers(tmp_path: Path) -> None:
    supervisor = supervisor_with(tmp_path, KEY)
    out = supervisor.start(NOW)
    assert to(out, Peer.BROKER) == [m.GetCounts()]
    assert isinstance(supervisor.notifier, FakeNotifier)
    assert supervisor.notifier.sent == []
    assert answer(supervisor, out, counts()) == []
    assert supervisor.notifier.sent == ["READY running 2 workers"]


def test_no_credential_is_a_warning_and_refuses_codex_tasks(tmp_path: Path) -> None:
    supervisor = supervisor_with(tmp_path, {})
    supervisor.start(NOW)
    assert supervisor.warnings == [MISSING_CREDENTIAL]
    codex = m.Enqueue(tasks=[TaskSpec(prompt="fix")])
    out = supervisor.on_request(CLIENT, codex, NOW)
    assert out == [
        Outgoing(Peer.CLIENT, CLIENT, m.ErrorReply(code="unavailable", message=MISSING_CREDENTIAL))
    ]
    command = m.Enqueue(tasks=[TaskSpec(prompt="x", agent="command", argv=["true"])])
    assert to(supervisor.on_request(CLIENT, command, NOW), Peer.BROKER) == [command]


# --- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        m.Enqueue(tasks=[TaskSpec(prompt="fix")]),
        m.ListTasks(),
        m.ShowTask(task=1),
        m.CancelTask(task=1),
        m.RetryTask(task=1),
        m.ListWorkers(),
    ],
    ids=lambda r: type(r).__name__,
)
def test_queue_requests_go_to_the_broker_and_its_answer_to_the_client(
    supervisor: Supervisor, request_: m.Message
) -> None:
    out = supervisor.on_request(CLIENT, request_, NOW)
    assert to(out, Peer.BROKER) == [request_]
    reply = m.Accepted(detail="from the broker")
    assert answer(supervisor, out, reply) == [Outgoing(Peer.CLIENT, CLIENT, reply)]


def test_event_queries_go_to_the_recorder(supervisor: Supervisor) -> None:
    request = m.GetEvents(task=3)
    out = supervisor.on_request(CLIENT, request, NOW)
    assert to(out, Peer.RECORDER) == [request]
    page = m.EventPage(events=[], more=False)
    assert answer(supervisor, out, page) == [Outgoing(Peer.CLIENT, CLIENT, page)]


def test_status_joins_the_broker_counts_with_the_supervisor_view(supervisor: Supervisor) -> None:
    out = supervisor.on_request(CLIENT, m.GetStatus(), NOW)
    assert to(out, Peer.BROKER) == [m.GetCounts()]
    [reply] = to(supervisor.on_answer(out[0].ident, counts(queued=2), NOW + 5), Peer.CLIENT)
    assert isinstance(reply, m.Status)
    assert (reply.pid, reply.uptime_s, reply.counts) == (7, 5.0, {"queued": 2})
    assert reply.stopping is None
    assert [p.role for p in reply.processes] == ["broker", "recorder", "worker 1", "worker 2"]


def test_a_diff_is_asked_of_the_broker_as_the_task(supervisor: Supervisor) -> None:
    out = supervisor.on_request(CLIENT, m.GetDiff(task=4), NOW)
    assert to(out, Peer.BROKER) == [m.ShowTask(task=4)]
    error = m.ErrorReply(code="not_found", message="no task 4")
    assert to(answer(supervisor, out, error), Peer.CLIENT) == [error]


def test_an_error_answer_reaches_the_client_as_it_is(supervisor: Supervisor) -> None:
    out = supervisor.on_request(CLIENT, m.ShowTask(task=9), NOW)
    error = m.ErrorReply(code="not_found", message="no task 9")
    assert to(answer(supervisor, out, error), Peer.CLIENT) == [error]


def test_an_undecodable_answer_is_an_internal_error(supervisor: Supervisor) -> None:
    out = supervisor.on_request(CLIENT, m.ListTasks(), NOW)
    [reply] = to(supervisor.on_answer(out[0].ident, None, NOW), Peer.CLIENT)
    assert isinstance(reply, m.ErrorReply) and reply.code == "internal"


def test_an_unanswered_request_fails_its_client_at_the_deadline(supervisor: Supervisor) -> None:
    out = supervisor.on_request(CLIENT, m.ListTasks(), NOW)
    assert to(supervisor.step(NOW + FORWARD_TIMEOUT), Peer.CLIENT) == []
    [late] = to(supervisor.step(NOW + FORWARD_TIMEOUT + 0.01), Peer.CLIENT)
    assert isinstance(late, m.ErrorReply) and late.code == "unavailable"
    assert answer(supervisor, out, m.TaskList(tasks=[])) == []  # too late: dropped


def test_a_request_the_broker_cannot_take_fails_its_client_at_once(
    supervisor: Supervisor,
) -> None:
    [request] = supervisor.on_request(CLIENT, m.ListTasks(), NOW)
    [reply] = to(supervisor.undeliverable(request), Peer.CLIENT)
    assert isinstance(reply, m.ErrorReply) and reply.code == "unavailable"


def test_a_malformed_request_is_refused_with_a_typed_error(supervisor: Supervisor) -> None:
    assert supervisor.refuse(CLIENT, "malformed request: x") == [
        Outgoing(
            Peer.CLIENT, CLIENT, m.ErrorReply(code="bad_request", message="malformed request: x")
        )
    ]


# --- stop, drain, signals ------------------------------------------------------------------------


def test_stop_is_accepted_and_pauses_dispatch(supervisor: Supervisor) -> None:
    out = supervisor.on_request(CLIENT, m.Stop(timeout=3.0), NOW)
    assert to(out, Peer.CLIENT) == [m.Accepted(detail="stopping; pid 7")]
    assert to(out, Peer.BROKER) == [m.SetDispatch(dispatching=False)]
    assert supervisor.shutdown.phase is Phase.STOPPING
    assert supervisor.shutdown.stop_deadline == NOW + 2.4


def test_drain_is_accepted_then_polls_until_nothing_runs(supervisor: Supervisor) -> None:
    out = supervisor.on_request(CLIENT, m.Drain(), NOW)
    assert to(out, Peer.CLIENT) == [m.Accepted(detail="draining; pid 7")]
    poll = supervisor.step(NOW + 0.2)
    assert to(poll, Peer.BROKER) == [m.GetCounts()]
    assert answer(supervisor, poll, counts(running=1)) == []
    assert supervisor.shutdown.phase is Phase.DRAINING
    poll = supervisor.step(NOW + 0.4)
    assert to(answer(supervisor, poll, counts()), Peer.BROKER) == [m.SetDispatch(dispatching=False)]
    assert supervisor.shutdown.phase is Phase.STOPPING


def test_a_signal_stops_the_fleet(supervisor: Supervisor) -> None:
    out = supervisor.on_signal("15", NOW)
    assert to(out, Peer.BROKER) == [m.SetDispatch(dispatching=False)]
    assert isinstance(supervisor.children, FakeChildren)
    assert supervisor.children.signalled(TERM) == ["worker 1", "worker 2"]
    assert supervisor.notifier.sent[-1] == "STOPPING stopping (signal 15)"  # type: ignore[attr-defined]


def test_the_supervisor_is_done_when_shutdown_is(supervisor: Supervisor) -> None:
    children = supervisor.children
    assert isinstance(children, FakeChildren)
    supervisor.on_signal("15", NOW)
    children.exit("worker 1", "worker 2")
    supervisor.step(NOW + 0.1)
    children.exit("broker", "recorder")
    supervisor.step(NOW + 0.2)
    assert supervisor.done and supervisor.exit_code == 0


# --- children ------------------------------------------------------------------------------------


def worker_child() -> Child:
    return Child("worker 2", target=lambda: None, args=lambda first: (), worker="w2")


def test_a_dead_worker_is_reported_to_the_broker_by_its_id(supervisor: Supervisor) -> None:
    out = supervisor.on_child_exit(worker_child(), NOW)
    assert to(out, Peer.BROKER) == [
        m.WorkerGone(worker="w2", reason="worker process died (exit code 1)")
    ]


def test_a_dead_broker_is_not_reported_as_a_worker(supervisor: Supervisor) -> None:
    broker = Child("broker", target=lambda: None, args=lambda first: ())
    assert supervisor.on_child_exit(broker, NOW) == []


def test_a_crash_loop_stops_the_fleet_with_exit_code_1(supervisor: Supervisor) -> None:
    def crash(child: Child, now: float) -> int:
        raise CrashLoop("recorder died 6 times within 60 s (last exit code 1); stopping the fleet")

    supervisor.children.on_exit = crash  # type: ignore[method-assign]
    recorder = Child("recorder", target=lambda: None, args=lambda first: ())
    out = supervisor.on_child_exit(recorder, NOW)
    assert to(out, Peer.BROKER) == [m.SetDispatch(dispatching=False)]
    assert supervisor.exit_code == 1
    assert supervisor.shutdown.phase is Phase.STOPPING
    assert supervisor.warnings[-1].startswith("recorder died 6 times")


def test_a_crash_loop_of_the_web_process_leaves_the_fleet_running(
    supervisor: Supervisor,
) -> None:
    def crash(child: Child, now: float) -> int:
        raise CrashLoop("web died 6 times within 60 s (last exit code 1); fleetd runs on")

    supervisor.children.on_exit = crash  # type: ignore[method-assign]
    web = Child("web", target=lambda: None, args=lambda first: (), essential=False)
    assert supervisor.on_child_exit(web, NOW) == []
    assert supervisor.exit_code == 0
    assert supervisor.shutdown.phase is Phase.RUNNING
    assert supervisor.warnings[-1].startswith("web died 6 times")


def test_children_are_calmed_once_a_second(supervisor: Supervisor) -> None:
    children = supervisor.children
    assert isinstance(children, FakeChildren)
    for now in (NOW, NOW + 0.5, NOW + 1.0, NOW + 1.2, NOW + 2.0):
        supervisor.step(now)
    assert children.calmed == [NOW, NOW + 1.0, NOW + 2.0]


# --- workspace gc --------------------------------------------------------------------------------


def test_gc_asks_for_the_tasks_removes_off_the_loop_then_answers(
    supervisor: Supervisor,
) -> None:
    out = supervisor.on_request(CLIENT, m.CollectWorkspaces(), NOW)
    [listing] = to(out, Peer.BROKER)
    assert isinstance(listing, m.ListTasks)
    assert answer(supervisor, out, m.TaskList(tasks=[])) == []  # not yet: the removal runs
    assert supervisor.gc_job.busy
    done = supervisor.on_gc_done(NOW)
    assert done == [Outgoing(Peer.CLIENT, CLIENT, m.WorkspacesCollected(removed=[], busy=[]))]
    assert not supervisor.gc_job.busy


def test_a_second_gc_while_one_runs_is_a_conflict(supervisor: Supervisor) -> None:
    first = supervisor.on_request(CLIENT, m.CollectWorkspaces(), NOW)
    second = supervisor.on_request(b"client-2", m.CollectWorkspaces(), NOW)
    answer(supervisor, first, m.TaskList(tasks=[]))
    [conflict] = to(answer(supervisor, second, m.TaskList(tasks=[])), Peer.CLIENT)
    assert isinstance(conflict, m.ErrorReply) and conflict.code == "conflict"


def test_retention_gc_runs_every_ten_minutes_while_running(supervisor: Supervisor) -> None:
    assert to(supervisor.step(NOW + RETENTION_CHECK_SECONDS - 1), Peer.BROKER) == []
    [listing] = to(supervisor.step(NOW + RETENTION_CHECK_SECONDS), Peer.BROKER)
    assert isinstance(listing, m.ListTasks)
    supervisor.on_signal("15", NOW)
    later = to(supervisor.step(NOW + 3 * RETENTION_CHECK_SECONDS), Peer.BROKER)
    assert [r for r in later if isinstance(r, m.ListTasks)] == []


def test_the_watchdog_is_fed_at_its_interval(tmp_path: Path) -> None:
    supervisor = supervisor_with(tmp_path, KEY)
    notifier = supervisor.notifier
    assert isinstance(notifier, FakeNotifier)
    notifier.watchdog_interval = 5.0
    for now in (NOW, NOW + 2.0, NOW + 5.0, NOW + 7.0, NOW + 10.0):
        supervisor.step(now)
    assert notifier.sent.count("WATCHDOG") == 3


def test_a_gc_that_fails_choosing_is_a_typed_error_and_the_supervisor_goes_on(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(*_: object) -> list[int]:
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(supervisor.gc, "eligible", fails)
    out = supervisor.on_request(CLIENT, m.CollectWorkspaces(older_than_hours=1.0), NOW)
    [error] = to(answer(supervisor, out, m.TaskList(tasks=[])), Peer.CLIENT)
    assert isinstance(error, m.ErrorReply) and error.code == "internal"
    assert not supervisor.gc_job.busy and supervisor.gc_client is None
    later = supervisor.on_request(CLIENT, m.GetStatus(), NOW)
    assert isinstance(to(later, Peer.BROKER)[0], m.GetCounts)  # still serving


def test_a_gc_that_fails_removing_is_a_typed_error(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(_: list[int]) -> m.Message:
        raise OSError("Input/output error")

    monkeypatch.setattr(supervisor.gc, "remove", fails)
    out = supervisor.on_request(CLIENT, m.CollectWorkspaces(), NOW)
    answer(supervisor, out, m.TaskList(tasks=[]))
    [error] = to(supervisor.on_gc_done(NOW), Peer.CLIENT)
    assert isinstance(error, m.ErrorReply) and error.code == "internal"


@pytest.mark.parametrize("hours", [float("nan"), float("inf"), 1e300, -1.0])
def test_gc_ages_no_validation_caught_never_escape(supervisor: Supervisor, hours: float) -> None:
    """Built directly, a request skips decoding's checks: whatever the age, a typed reply."""
    out = supervisor.on_request(CLIENT, m.CollectWorkspaces(older_than_hours=hours), NOW)
    replies = to(answer(supervisor, out, m.TaskList(tasks=[])), Peer.CLIENT)
    replies += to(supervisor.on_gc_done(NOW), Peer.CLIENT)
    [reply] = replies
    assert isinstance(reply, m.WorkspacesCollected | m.ErrorReply)
