"""A short task's end reaches the broker as one ZeroMQ message: the last result (released: the
worker ran this task meanwhile), then WorkerFree. Served together, they are one write: the
result stored and the worker's next task claimed in one transaction."""

from __future__ import annotations

import pytest

from fleetd.broker.logic import Broker
from fleetd.stores.protocol import QueueStoreAPI
from shared import messages as m
from shared.models import ExecutionResult, TaskSpec
from tests.unit.broker.queries import execution_holder, sql
from tests.unit.broker.test_broker import assigns, enqueue, ready, workers

W1 = b"w1"


def result_and_free(done: int, ended: int, outcome: str = "succeeded") -> list[m.Message]:
    code = 0 if outcome == "succeeded" else 1
    result = ExecutionResult(exit_code=code, failure_class=None if code == 0 else "transient")
    return [
        m.Finished(execution=done, outcome=outcome, result=result, released=True),
        m.WorkerFree(worker="w1", pid=100, execution=ended),
    ]


def _two_running(broker: Broker) -> None:
    """w1 ran task 1 (its result pending) and now ends task 2; tasks 3 and 4 are queued."""
    ready(broker, now=0)
    enqueue(broker, "a", "b", "c", "d", now=0)
    assert assigns(broker.handle_all(W1, b"", [m.WorkerFree(worker="w1", pid=100, execution=1)], 1))


def test_the_result_and_the_next_claim_are_one_assign(broker: Broker, store: QueueStoreAPI) -> None:
    _two_running(broker)
    out = broker.handle_all(W1, b"", result_and_free(1, 2), 2)
    assert [o.message for o in out if not isinstance(o.message, m.Assign)] == []
    [assign] = [o.message for o in out]
    assert isinstance(assign, m.Assign) and (assign.task, assign.acknowledges) == (3, 1)
    assert execution_holder(store, 1) == ("succeeded", "w1")
    assert execution_holder(store, 2) == ("running", "w1")  # until its own result
    assert workers(broker) == [("w1", "busy")]


@pytest.mark.sqlite_only
@pytest.mark.parametrize("shape", ["adjacent", "the next start between"])
def test_they_take_one_commit(broker: Broker, store: QueueStoreAPI, shape: str) -> None:
    _two_running(broker)
    commits: list[int] = []
    store.conn.set_commit_hook(lambda: bool(commits.append(1)))  # type: ignore[attr-defined]
    requests = result_and_free(1, 2) if shape == "adjacent" else started_between(1, 2)
    broker.handle_all(W1, b"", requests, 2)
    assert len(commits) == 1


def started_between(done: int, ended: int) -> list[m.Message]:
    """What a worker sends most often (its outbox's order): the last result, held for the
    next Assign, then that run's AgentStarted, then its WorkerFree."""
    result, free = result_and_free(done, ended)
    return [result, m.AgentStarted(execution=ended, started_at=1_500, pid=4321), free]


def test_the_next_runs_start_between_them_keeps_them_together(
    broker: Broker, store: QueueStoreAPI
) -> None:
    _two_running(broker)
    out = broker.handle_all(W1, b"", started_between(1, 2), 2)
    [assign] = [o.message for o in out]
    assert isinstance(assign, m.Assign) and (assign.task, assign.acknowledges) == (3, 1)
    assert execution_holder(store, 1) == ("succeeded", "w1")
    started = (
        sql(store)
        .execute("SELECT started_at, agent_pid FROM executions WHERE id = ?", (2,))
        .fetchone()
    )
    assert started == (1_500, 4321)


def test_with_nothing_queued_the_result_is_acknowledged_and_the_worker_waits(
    broker: Broker,
) -> None:
    ready(broker, now=0)
    enqueue(broker, "a", "b", now=0)
    broker.handle_all(W1, b"", [m.WorkerFree(worker="w1", pid=100, execution=1)], 1)
    out = broker.handle_all(W1, b"", result_and_free(1, 2), 2)
    assert [o.message for o in out] == [m.FinishAck(execution=1)]
    assert workers(broker) == [("w1", "idle")]
    assert assigns(enqueue(broker, "c", now=3)) == [(W1, 3, 3)]


def test_a_resent_result_with_the_free_still_frees_the_worker(broker: Broker) -> None:
    _two_running(broker)
    broker.handle_all(W1, b"", result_and_free(1, 2), 2)  # task 3 assigned
    broker.handle_all(W1, b"", [m.WorkerFree(worker="w1", pid=100, execution=3)], 3)  # task 4
    out = broker.handle_all(W1, b"", result_and_free(1, 4), 4)  # 1's result again
    assert m.FinishAck(execution=1) in [o.message for o in out]
    assert workers(broker) == [("w1", "idle")]  # nothing left to claim


def test_another_waiting_worker_is_served_first(broker: Broker) -> None:
    """The pair is served one by one when another worker waits: a task the result releases
    goes to the worker that waited longest, as without the pairing."""
    ready(broker, now=0)
    enqueue(broker, "a", "b", now=0)  # w1 runs task 1
    broker.handle_all(W1, b"", [m.WorkerFree(worker="w1", pid=100, execution=1)], 1)  # then 2
    ready(broker, worker="w2", now=1)  # nothing claimable: it waits
    after_1 = m.Enqueue(tasks=[TaskSpec(prompt="c", after=[1])])
    assert assigns(broker.handle(b"client", b"ref", after_1, 1)) == []  # task 3 waits on 1
    out = broker.handle_all(W1, b"", result_and_free(1, 2), 2)
    assert assigns(out) == [(b"w2", 3, 3)]
    assert sorted(workers(broker)) == [("w1", "idle"), ("w2", "busy")]


@pytest.mark.sqlite_only
def test_an_enqueue_claims_for_a_waiting_worker_in_its_own_commit(
    broker: Broker, store: QueueStoreAPI
) -> None:
    ready(broker, now=0)
    ready(broker, worker="w2", now=0)
    commits: list[int] = []
    store.conn.set_commit_hook(lambda: bool(commits.append(1)))  # type: ignore[attr-defined]
    out = enqueue(broker, "a", "b", now=1)
    assert sorted(assigns(out)) == [(W1, 1, 1), (b"w2", 2, 2)]
    assert len(commits) == 2  # the enqueue with w1's claim, then w2's


def test_an_enqueue_of_nothing_claimable_leaves_the_worker_waiting(broker: Broker) -> None:
    ready(broker, now=0)
    spec = m.Enqueue(tasks=[TaskSpec(prompt="later", not_before=10_000_000)])
    out = broker.handle(b"client", b"ref", spec, 1)
    assert assigns(out) == []
    assert workers(broker) == [("w1", "idle")]
    assert assigns(broker.step(10_000_001)) == [(W1, 1, 1)]
