"""The broker with retries: backoff wake-ups, RetryTask, and the resume carried in Assign."""

from __future__ import annotations

import pytest

from fleetd.broker.logic import LEASE_CHECK_INTERVAL_US, Broker
from fleetd.broker.store import QueueStore
from fleetd.runtime.routing import ToPeer
from shared import messages as m
from shared.models import ExecutionResult, ResumeFrom, TaskSpec

SECOND = 1_000_000
CLIENT = b"client"


@pytest.fixture
def store(exact_backoff_store: QueueStore) -> QueueStore:
    return exact_backoff_store


def ready(broker: Broker, now: int = 0) -> list[ToPeer]:
    return broker.handle(b"w1", b"", m.Ready(worker="w1", pid=100), now)


def enqueue(broker: Broker, spec: TaskSpec, now: int = 1) -> list[ToPeer]:
    return broker.handle(CLIENT, b"ref", m.Enqueue(tasks=[spec]), now)


def finished(broker: Broker, execution: int, result: ExecutionResult, now: int) -> list[ToPeer]:
    message = m.Finished(execution=execution, outcome="failed", result=result)
    return broker.handle(b"w1", b"", message, now)


def retry(broker: Broker, task: int, resume: bool = False, now: int = 50) -> list[ToPeer]:
    return broker.handle(CLIENT, b"r", m.RetryTask(task=task, resume=resume), now)


def assigned(out: list[ToPeer]) -> list[m.Assign]:
    return [o.message for o in out if isinstance(o.message, m.Assign)]


COMMAND = TaskSpec(prompt="p", agent="command", argv=["true"])
CODEX = TaskSpec(prompt="p")
TRANSIENT = ExecutionResult(exit_code=1, failure_class="transient")


def test_transient_failure_is_assigned_again_when_its_backoff_ends(broker: Broker) -> None:
    ready(broker)
    [first] = assigned(enqueue(broker, COMMAND))
    out = finished(broker, first.execution, TRANSIENT, 10)
    assert assigned(out) == []  # the worker waits: the task is not claimable yet
    retry_at = 10 + 5 * SECOND
    # Between lease checks, so only the broker's own wake-up can hand the task out.
    first_step = retry_at - SECOND // 2
    assert assigned(broker.step(first_step)) == []
    assert broker.next_lease_check == first_step + LEASE_CHECK_INTERVAL_US
    assert assigned(broker.step(retry_at - 1)) == []
    [again] = assigned(broker.step(retry_at))
    assert (again.task, again.attempt) == (first.task, 2)


def test_permanent_failure_is_not_assigned_again(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    [first] = assigned(enqueue(broker, COMMAND))
    finished(broker, first.execution, ExecutionResult(exit_code=1, failure_class="permanent"), 10)
    assert assigned(broker.step(10 * SECOND)) == []
    assert store.counts() == {"failed": 1}


def test_retry_task_queues_it_and_assigns_a_waiting_worker(broker: Broker) -> None:
    ready(broker)
    [first] = assigned(enqueue(broker, COMMAND))
    finished(broker, first.execution, ExecutionResult(exit_code=1, failure_class="agent"), 10)
    out = retry(broker, first.task)
    assert out[0] == ToPeer(CLIENT, b"r", m.Retried(task=first.task, state="queued"))
    [again] = assigned(out)
    assert (again.task, again.attempt, again.resume) == (first.task, 2, None)


def test_retry_of_a_running_task_is_a_conflict(broker: Broker) -> None:
    ready(broker)
    [first] = assigned(enqueue(broker, COMMAND))
    [reply] = retry(broker, first.task)
    assert isinstance(reply.message, m.ErrorReply) and reply.message.code == "conflict"
    assert "fleetctl cancel" in reply.message.message


def test_retry_of_an_unknown_task_is_not_found(broker: Broker) -> None:
    [reply] = retry(broker, 77)
    assert reply.message == m.ErrorReply(
        code="not_found", message="no task 77: `fleetctl list` shows the known tasks"
    )


def test_retry_resume_sends_the_thread_in_the_assign(broker: Broker) -> None:
    ready(broker)
    [first] = assigned(enqueue(broker, CODEX))
    result = ExecutionResult(exit_code=1, thread_id="th-9", session_file="/c/s.jsonl")
    finished(broker, first.execution, result, 10)
    out = retry(broker, first.task, resume=True)
    assert out[0].message == m.Retried(task=first.task, state="queued", resume=True)
    [again] = assigned(out)
    assert again.resume == ResumeFrom(
        execution=first.execution, thread_id="th-9", session_file="/c/s.jsonl"
    )


def test_retry_resume_without_a_thread_is_a_conflict(broker: Broker, store: QueueStore) -> None:
    ready(broker)
    [first] = assigned(enqueue(broker, CODEX))
    finished(broker, first.execution, ExecutionResult(exit_code=1), 10)
    [reply] = retry(broker, first.task, resume=True)
    assert isinstance(reply.message, m.ErrorReply) and reply.message.code == "conflict"
    assert reply.message.message.startswith("nothing to resume")
    assert store.counts() == {"failed": 1}
