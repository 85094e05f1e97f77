"""The broker's socket-free logic: requests in, ToPeer messages out, time passed explicitly."""

from __future__ import annotations

from pathlib import Path

import apsw

from fleetd.broker.logic import LEASE_CHECK_INTERVAL_US, Broker, Claims
from fleetd.broker.store import QueueStore
from fleetd.runtime.routing import ToPeer
from shared import messages as m
from shared.config import load_config
from shared.models import ExecutionResult, TaskSpec
from tests.unit.broker.queries import execution_holder

LEASE_US = 30_000_000  # the default lease_seconds
CLIENT = b"client"


def ready(broker: Broker, worker: str = "w1", now: int = 0) -> list[ToPeer]:
    return broker.handle(worker.encode(), b"", m.Ready(worker=worker, pid=100), now)


def enqueue(broker: Broker, *prompts: str, now: int = 1) -> list[ToPeer]:
    request = m.Enqueue(tasks=[TaskSpec(prompt=p) for p in prompts])
    return broker.handle(CLIENT, b"ref", request, now)


def finished(
    broker: Broker, execution: int, worker: str = "w1", outcome: str = "succeeded", now: int = 5
) -> list[ToPeer]:
    message = m.Finished(execution=execution, outcome=outcome, result=ExecutionResult(exit_code=0))
    return broker.handle(worker.encode(), b"", message, now)


def workers(broker: Broker) -> list[tuple[str, str]]:
    """(id, state) of the workers as ListWorkers reports them."""
    [reply] = broker.handle(CLIENT, b"w", m.ListWorkers(), 0)
    assert isinstance(reply.message, m.WorkerList)
    return [(w.id, w.state) for w in reply.message.workers]


def assigns(out: list[ToPeer]) -> list[tuple[bytes, int, int]]:
    """(worker, task, execution) of every Assign in `out`."""
    return [
        (o.peer, o.message.task, o.message.execution)
        for o in out
        if isinstance(o.message, m.Assign)
    ]


def test_ready_with_empty_queue_sends_nothing(broker: Broker) -> None:
    assert ready(broker) == []
    assert workers(broker) == [("w1", "idle")]


def test_enqueue_to_a_ready_worker_assigns_it(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    out = enqueue(broker, "a")
    assert out == [
        ToPeer(CLIENT, b"ref", m.Enqueued(ids=[1], created=[True])),
        ToPeer(
            b"w1",
            b"",
            m.Assign(
                task=1,
                execution=1,
                attempt=1,
                spec=TaskSpec(prompt="a"),
                lease_expires_at=1 + LEASE_US,
                lease=1,  # the first lease token, on either store
            ),
        ),
    ]
    assert store.running_of("w1") == [(1, 1, 1)]


def test_ready_after_enqueue_assigns_at_once(broker: Broker) -> None:
    enqueue(broker, "a")
    assert assigns(ready(broker, now=2)) == [(b"w1", 1, 1)]


def test_enqueue_without_workers_only_replies(broker: Broker, store: QueueStore) -> None:
    out = enqueue(broker, "a", "b")
    assert out == [ToPeer(CLIENT, b"ref", m.Enqueued(ids=[1, 2], created=[True, True]))]
    assert store.counts() == {"queued": 2}


def test_each_waiting_worker_gets_one_task_in_fifo_order(broker: Broker) -> None:
    ready(broker, "w1")
    ready(broker, "w2")
    assert assigns(enqueue(broker, "a", "b", "c")) == [(b"w1", 1, 1), (b"w2", 2, 2)]


def test_idempotent_enqueue_reports_the_existing_task(broker: Broker) -> None:
    spec = TaskSpec(prompt="a", key="k")
    broker.handle(CLIENT, b"r1", m.Enqueue(tasks=[spec]), 1)
    out = broker.handle(CLIENT, b"r2", m.Enqueue(tasks=[spec]), 2)
    assert out == [ToPeer(CLIENT, b"r2", m.Enqueued(ids=[1], created=[False]))]


def test_key_reused_with_another_spec_is_a_conflict(broker: Broker, store: QueueStore) -> None:
    broker.handle(CLIENT, b"r1", m.Enqueue(tasks=[TaskSpec(prompt="a", key="k")]), 1)
    out = broker.handle(CLIENT, b"r2", m.Enqueue(tasks=[TaskSpec(prompt="b", key="k")]), 2)
    [reply] = [o.message for o in out]
    assert isinstance(reply, m.ErrorReply) and reply.code == "conflict"
    assert "key 'k' is task 1" in reply.message
    assert store.counts() == {"queued": 1}


def test_invalid_spec_is_refused_and_nothing_is_enqueued(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    request = m.Enqueue(tasks=[TaskSpec(prompt="ok"), TaskSpec(prompt="x", agent="command")])
    out = broker.handle(CLIENT, b"ref", request, 1)
    assert len(out) == 1
    reply = out[0].message
    assert (out[0].peer, out[0].ref) == (CLIENT, b"ref")
    assert isinstance(reply, m.ErrorReply)
    assert reply.code == "bad_request"
    assert reply.message.startswith("task 2: a command task needs its argv")
    assert store.counts() == {}


def test_single_invalid_spec_message_has_no_task_number(broker: Broker) -> None:
    out = broker.handle(CLIENT, b"ref", m.Enqueue(tasks=[TaskSpec(prompt=" ")]), 1)
    assert out == [
        ToPeer(
            CLIENT, b"ref", m.ErrorReply(code="bad_request", message="a codex task needs a prompt")
        )
    ]


def test_finished_is_acked_by_the_next_tasks_assign(broker: Broker, store: QueueStore) -> None:
    """One message to the worker, not a FinishAck and an Assign."""
    ready(broker)
    enqueue(broker, "a", "b")
    out = finished(broker, 1)
    assert assigns(out) == [(b"w1", 2, 2)]
    assert len(out) == 1
    assert isinstance(out[0].message, m.Assign) and out[0].message.acknowledges == 1
    assert store.counts() == {"succeeded": 1, "running": 1}


def test_finished_with_empty_queue_leaves_the_worker_waiting(broker: Broker) -> None:
    ready(broker)
    enqueue(broker, "a")
    assert finished(broker, 1) == [ToPeer(b"w1", b"", m.FinishAck(execution=1))]
    assert assigns(enqueue(broker, "b", now=6)) == [(b"w1", 2, 2)]


def test_resent_finished_is_only_acked(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    enqueue(broker, "a")
    finished(broker, 1)
    assert finished(broker, 1, now=6) == [ToPeer(b"w1", b"", m.FinishAck(execution=1))]
    assert store.counts() == {"succeeded": 1}


def test_resent_finished_claims_no_task_it_does_not_assign(
    broker: Broker, store: QueueStore
) -> None:
    ready(broker)
    enqueue(broker, "a", "b", "c")
    assert assigns(finished(broker, 1)) == [(b"w1", 2, 2)]
    resent = finished(broker, 1, now=6)
    assert resent == [ToPeer(b"w1", b"", m.FinishAck(execution=1))]
    # Task 3 was never handed out, so it must still be queued.
    assert store.counts() == {"succeeded": 1, "running": 1, "queued": 1}


def test_interrupted_finish_gives_the_task_back(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    enqueue(broker, "a")
    broker.handle(CLIENT, b"", m.SetDispatch(dispatching=False), 2)
    finished(broker, 1, outcome="interrupted")
    view = store.get_task(1)
    assert view is not None and (view.state, view.attempts) == ("queued", 0)


def test_heartbeat_renews_the_lease(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    enqueue(broker, "a", now=0)
    heartbeat = m.Heartbeat(worker="w1", pid=100, execution=1)
    assert broker.handle(b"w1", b"", heartbeat, LEASE_US - 1) == []
    assert broker.step(LEASE_US + 10) == []
    assert execution_holder(store, 1) == ("running", "w1")


def test_heartbeat_for_an_execution_no_longer_held_says_its_lease_is_lost(
    broker: Broker, store: QueueStore
) -> None:
    ready(broker)
    enqueue(broker, "a", now=0)
    broker.step(LEASE_US + 1)  # the lease expires: execution 1 is lost, task 1 requeued
    assert execution_holder(store, 1) == ("lost", "w1")
    heartbeat = m.Heartbeat(worker="w1", pid=100, execution=1)
    out = broker.handle(b"w1", b"", heartbeat, LEASE_US + 2)
    assert out == [ToPeer(b"w1", b"", m.LeaseLost(execution=1))]


def test_heartbeat_for_another_workers_execution_says_its_lease_is_lost(broker: Broker) -> None:
    ready(broker, "w1")
    enqueue(broker, "a")
    heartbeat = m.Heartbeat(worker="w2", pid=200, execution=1)
    out = broker.handle(b"w2", b"", heartbeat, 2)
    assert out == [ToPeer(b"w2", b"", m.LeaseLost(execution=1))]


def test_idle_heartbeat_reannounces_a_forgotten_worker(broker: Broker) -> None:
    enqueue(broker, "a")
    out = broker.handle(b"w1", b"", m.Heartbeat(worker="w1", pid=100), 2)
    assert assigns(out) == [(b"w1", 1, 1)]


def test_idle_heartbeat_loses_an_assignment_that_never_arrived(
    broker: Broker, store: QueueStore
) -> None:
    ready(broker, now=0)
    enqueue(broker, "a", now=0)
    broker.handle(CLIENT, b"", m.SetDispatch(dispatching=False), 1)
    out = broker.handle(b"w1", b"", m.Heartbeat(worker="w1", pid=100), 2_000_001)
    assert out == []
    assert execution_holder(store, 1) == ("lost", "w1")
    view = store.get_task(1)
    assert view is not None and (view.state, view.attempts) == ("queued", 1)


def test_expired_lease_requeues_and_reassigns(broker: Broker, store: QueueStore) -> None:
    ready(broker, "w1")
    enqueue(broker, "a", now=0)
    ready(broker, "w2", now=1)
    out = broker.step(LEASE_US + 1)
    assert [(peer, task, ex) for peer, task, ex in assigns(out)] == [(b"w2", 1, 2)]
    assert out[0].message.attempt == 2


def test_lease_check_runs_at_most_once_per_interval(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    enqueue(broker, "a", now=0)
    broker.step(LEASE_US - 1)
    broker.step(LEASE_US + 5)  # past the lease, but within the check interval
    assert execution_holder(store, 1) == ("running", "w1")
    broker.step(LEASE_US - 1 + LEASE_CHECK_INTERVAL_US)
    assert execution_holder(store, 1) == ("lost", "w1")


def test_worker_gone_requeues_its_task(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    enqueue(broker, "a")
    out = broker.handle(b"supervisor", b"r", m.WorkerGone(worker="w1", reason="killed"), 3)
    assert out == [ToPeer(b"supervisor", b"r", m.Accepted())]
    view = store.get_task(1)
    assert view is not None and (view.state, view.attempts) == ("queued", 1)
    assert view.executions[0].result == ExecutionResult(error="lost", reason="killed")
    assert workers(broker) == []


def test_worker_gone_hands_the_task_to_a_waiting_worker(broker: Broker) -> None:
    ready(broker, "w1")
    enqueue(broker, "a")
    ready(broker, "w2")
    out = broker.handle(b"supervisor", b"r", m.WorkerGone(worker="w1", reason="killed"), 3)
    assert assigns(out) == [(b"w2", 1, 2)]


def test_ready_from_a_busy_worker_loses_its_old_execution(
    broker: Broker, store: QueueStore
) -> None:
    ready(broker)
    enqueue(broker, "a")
    out = ready(broker, now=3)  # the worker restarted
    assert execution_holder(store, 1) == ("lost", "w1")
    assert assigns(out) == [(b"w1", 1, 2)]


def test_cancel_running_task_asks_its_worker_to_end_it(broker: Broker) -> None:
    ready(broker)
    enqueue(broker, "a")
    out = broker.handle(CLIENT, b"c", m.CancelTask(task=1), 3)
    assert out == [
        ToPeer(CLIENT, b"c", m.Cancelled(task=1, state="running", pending=True)),
        ToPeer(b"w1", b"", m.CancelExecution(execution=1)),
    ]


def test_cancelled_run_finishes_the_task_cancelled(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    enqueue(broker, "a")
    broker.handle(CLIENT, b"c", m.CancelTask(task=1), 3)
    finished(broker, 1, outcome="cancelled")
    assert store.counts() == {"cancelled": 1}


def test_cancel_queued_task(broker: Broker, store: QueueStore) -> None:
    enqueue(broker, "a")
    out = broker.handle(CLIENT, b"c", m.CancelTask(task=1), 3)
    assert out == [ToPeer(CLIENT, b"c", m.Cancelled(task=1, state="cancelled", pending=False))]
    assert assigns(ready(broker, now=4)) == []


def test_cancel_unknown_task_is_not_found(broker: Broker) -> None:
    [reply] = broker.handle(CLIENT, b"c", m.CancelTask(task=9), 3)
    assert isinstance(reply.message, m.ErrorReply)
    assert reply.message.code == "not_found"
    assert "no task 9" in reply.message.message


def test_set_dispatch_false_stops_assignments(broker: Broker, store: QueueStore) -> None:
    out = broker.handle(b"supervisor", b"s", m.SetDispatch(dispatching=False), 0)
    assert out == [ToPeer(b"supervisor", b"s", m.Accepted())]
    assert ready(broker, now=1) == []
    assert assigns(enqueue(broker, "a", now=2)) == []
    assert assigns(broker.step(3)) == []
    assert store.counts() == {"queued": 1}


def test_set_dispatch_true_resumes_assignments(broker: Broker) -> None:
    broker.handle(b"supervisor", b"s", m.SetDispatch(dispatching=False), 0)
    ready(broker, now=1)
    enqueue(broker, "a", now=2)
    out = broker.handle(b"supervisor", b"s", m.SetDispatch(dispatching=True), 3)
    assert out[0] == ToPeer(b"supervisor", b"s", m.Accepted())
    assert assigns(out) == [(b"w1", 1, 1)]


def test_finished_while_not_dispatching_assigns_nothing(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    enqueue(broker, "a", "b")
    broker.handle(b"supervisor", b"s", m.SetDispatch(dispatching=False), 2)
    assert finished(broker, 1) == [ToPeer(b"w1", b"", m.FinishAck(execution=1))]
    assert store.counts() == {"succeeded": 1, "queued": 1}


def test_get_counts_reports_states_workers_and_dispatching(broker: Broker) -> None:
    ready(broker, "w1")
    enqueue(broker, "a", "b")
    [reply] = broker.handle(b"supervisor", b"s", m.GetCounts(), 3)
    message = reply.message
    assert isinstance(message, m.QueueCounts)
    assert message.counts == {"running": 1, "queued": 1}
    assert [(w.id, w.state, w.task, w.execution) for w in message.workers] == [("w1", "busy", 1, 1)]
    assert message.dispatching is True


def test_show_and_list_tasks(broker: Broker) -> None:
    enqueue(broker, "a", "b")
    [shown] = broker.handle(CLIENT, b"s", m.ShowTask(task=2), 3)
    assert isinstance(shown.message, m.TaskDetail)
    assert shown.message.task.spec == TaskSpec(prompt="b")
    [listed] = broker.handle(CLIENT, b"l", m.ListTasks(limit=1), 3)
    assert isinstance(listed.message, m.TaskList)
    assert [t.id for t in listed.message.tasks] == [2]
    [missing] = broker.handle(CLIENT, b"s", m.ShowTask(task=9), 3)
    assert isinstance(missing.message, m.ErrorReply) and missing.message.code == "not_found"


def test_workers_are_listed_in_natural_order(broker: Broker) -> None:
    for worker in ("w10", "w2", "w1"):
        ready(broker, worker)
    [reply] = broker.handle(CLIENT, b"w", m.ListWorkers(), 3)
    assert isinstance(reply.message, m.WorkerList)
    assert [w.id for w in reply.message.workers] == ["w1", "w2", "w10"]


def test_agent_started_is_recorded(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    enqueue(broker, "a")
    assert broker.handle(b"w1", b"", m.AgentStarted(execution=1, started_at=7, pid=55), 8) == []
    view = store.get_task(1)
    assert view is not None and view.executions[0].started_at == 7


def test_request_the_broker_does_not_serve_is_a_bad_request(broker: Broker) -> None:
    [reply] = broker.handle(CLIENT, b"x", m.GetStatus(), 1)
    assert reply.message == m.ErrorReply(
        code="bad_request", message="the broker does not serve GetStatus"
    )


def test_undeliverable_assign_returns_the_task_unspent(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    [_, assign] = enqueue(broker, "a")
    broker.undeliverable(assign, 3)
    view = store.get_task(1)
    assert view is not None and (view.state, view.attempts) == ("queued", 0)
    assert workers(broker) == []


class FullDiskStore(QueueStore):
    """A queue whose writes fail as on a full disk while `full` is set."""

    full = False

    def claim(self, worker: str, now: int, lease_us: int, gate=None):  # type: ignore[no-untyped-def]
        if self.full:
            raise apsw.FullError("database or disk is full")
        return super().claim(worker, now, lease_us, gate)

    def enqueue_and_claim(self, specs, now, worker, lease_us, gate):  # type: ignore[no-untyped-def]
        if self.full:
            raise apsw.FullError("database or disk is full")
        return super().enqueue_and_claim(specs, now, worker, lease_us, gate)

    def lose_expired(self, now: int):  # type: ignore[no-untyped-def]
        if self.full:
            raise apsw.FullError("database or disk is full")
        return super().lose_expired(now)


def test_a_full_disk_postpones_claims_instead_of_crashing(tmp_path: Path) -> None:
    store = FullDiskStore(QueueStore.open(tmp_path / "full.db", 3).conn, 3)
    broker = Broker(store, load_config({"HOME": str(tmp_path)}))
    broker.step(0)  # the first lease check
    ready(broker)
    store.full = True
    out = enqueue(broker, "waits for room", now=1)
    assert assigns(out) == [], "nothing claimed, and no exception"
    assert isinstance(out[0].message, m.Enqueued)
    assert broker.claims is Claims.DISK_FULL  # retried on its own timer
    store.full = False
    assert broker.step(500_000) == [], "no claim before the retry is due"
    assert assigns(broker.step(1_000_001)) == [(b"w1", 1, 1)]
    store.full = True
    assert broker.step(2 * LEASE_CHECK_INTERVAL_US) == [], "the lease check survives it too"
    store.close()
