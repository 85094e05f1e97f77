"""A worker that is free before its last result: `WorkerFree` makes it idle (its next task is
assigned) while that execution stays running until its `Finished(released=True)`, which
claims nothing and is acknowledged on its own."""

from __future__ import annotations

from pathlib import Path

from fleetd.broker.logic import Broker
from fleetd.broker.store import QueueStore
from shared import messages as m
from shared.models import ExecutionResult, TaskSpec
from tests.unit.broker.queries import execution_holder
from tests.unit.broker.test_broker import (
    CLIENT,
    LEASE_US,
    assigns,
    enqueue,
    ready,
    workers,
)
from tests.unit.broker.test_broker_budgets import broker_with


def free(broker: Broker, execution: int, now: int, worker: str = "w1") -> list:
    message = m.WorkerFree(worker=worker, pid=100, execution=execution)
    return broker.handle(worker.encode(), b"", message, now)


def released(
    broker: Broker, execution: int, now: int, outcome: str = "succeeded", worker: str = "w1"
) -> list:
    result = (
        ExecutionResult(exit_code=0)
        if outcome == "succeeded"
        else ExecutionResult(exit_code=1, failure_class="transient")
    )
    message = m.Finished(execution=execution, outcome=outcome, result=result, released=True)
    return broker.handle(worker.encode(), b"", message, now)


def test_a_free_worker_gets_its_next_task_while_the_last_stays_running(
    broker: Broker, store: QueueStore
) -> None:
    ready(broker, now=0)
    enqueue(broker, "a", "b", "c", now=0)
    out = free(broker, 1, now=2)
    assert assigns(out) == [(b"w1", 2, 2)]
    assert execution_holder(store, 1) == ("running", "w1")  # not finished before its seal
    assert store.get_task(1).state == "running"  # type: ignore[union-attr]

    out = released(broker, 1, now=3)
    assert [o.message for o in out] == [m.FinishAck(execution=1)]  # nothing claimed with it
    assert execution_holder(store, 1) == ("succeeded", "w1")
    assert workers(broker) == [("w1", "busy")]
    assert released(broker, 1, now=4) == [
        o for o in out if isinstance(o.message, m.FinishAck)
    ]  # a resend is acknowledged again


def test_a_free_worker_waits_when_nothing_is_queued(broker: Broker) -> None:
    ready(broker, now=0)
    enqueue(broker, "a", now=0)
    assert free(broker, 1, now=2) == []
    assert workers(broker) == [("w1", "idle")]
    released(broker, 1, now=3)
    assert assigns(enqueue(broker, "b", now=4)) == [(b"w1", 2, 2)]


def test_a_released_result_that_requeues_its_task_wakes_a_waiting_worker(
    broker: Broker, store: QueueStore
) -> None:
    ready(broker, now=0)
    enqueue(broker, "a", now=0)
    free(broker, 1, now=2)  # nothing else queued: the broker stops trying
    out = released(broker, 1, now=3, outcome="failed")  # retried after its backoff
    assert store.get_task(1).state == "queued"  # type: ignore[union-attr]
    due = store.next_claimable_at(3) or 3
    later = broker.step(due + 1)
    assert assigns(out + later) == [(b"w1", 1, 2)]


def test_a_limit_held_by_a_closing_run_frees_when_its_result_comes(
    store: QueueStore, tmp_path: Path
) -> None:
    broker = broker_with(store, tmp_path, '[limits]\n"agent:command" = 1\n')
    command = TaskSpec(prompt="p", agent="command", argv=["true"])
    ready(broker, now=0)
    broker.handle(CLIENT, b"r", m.Enqueue(tasks=[command, command]), 0)
    assert free(broker, 1, now=2) == []  # execution 1 still holds the only slot
    out = released(broker, 1, now=3)
    assert assigns(out) == [(b"w1", 2, 2)]


def test_heartbeats_keep_the_leases_of_results_being_sealed(
    broker: Broker, store: QueueStore
) -> None:
    ready(broker, now=0)
    enqueue(broker, "a", "b", now=0)
    free(broker, 1, now=1)  # execution 2 assigned to w1
    beat = m.Heartbeat(worker="w1", pid=100, execution=2, sealing=[1])
    assert broker.handle(b"w1", b"", beat, LEASE_US - 1) == []
    broker.step(LEASE_US + 10)
    assert execution_holder(store, 1) == ("running", "w1")
    assert execution_holder(store, 2) == ("running", "w1")


def test_an_idle_heartbeat_does_not_lose_a_result_being_sealed(
    broker: Broker, store: QueueStore
) -> None:
    """Idle but for a result in the recorder: that execution reached the worker, and the worker
    (forgotten by a restarted broker, say) is announced again as free."""
    enqueue(broker, "a", now=0)
    ready(broker, now=0)
    broker.waiting.clear()  # as after a broker restart
    enqueue(broker, "b", now=1)
    beat = m.Heartbeat(worker="w1", pid=100, sealing=[1])
    out = broker.handle(b"w1", b"", beat, 2_000_001 + 5)
    assert execution_holder(store, 1) == ("running", "w1")
    assert assigns(out) == [(b"w1", 2, 2)]


def test_a_free_worker_whose_run_has_dependents_is_claimed_for_with_its_result(
    broker: Broker,
) -> None:
    """A dependent released by the result may outrank what is queued: the worker's next claim
    waits for that result (as without the overlap), so the dependent is not passed over."""
    ready(broker, now=0)
    enqueue(broker, "parent", now=0)  # task 1, execution 1 on w1
    child = TaskSpec(prompt="child", after=[1], priority=9)
    broker.handle(CLIENT, b"r", m.Enqueue(tasks=[child, TaskSpec(prompt="other")]), 1)
    assert free(broker, 1, now=2) == []  # task 3 ("other") is not handed out before the result
    out = released(broker, 1, now=3)
    assert assigns(out) == [(b"w1", 2, 2)]  # the child, by its priority
    [assign] = [o.message for o in out if isinstance(o.message, m.Assign)]
    assert assign.acknowledges == 1
