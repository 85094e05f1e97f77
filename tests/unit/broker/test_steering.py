"""`fleetctl say` and `interrupt` reach the worker running the task, or are refused saying why."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from fleetd.broker.logic import Broker
from fleetd.broker.store import QueueStore
from fleetd.runtime.routing import ToPeer
from shared import messages as m
from shared.config import load_config
from tests.unit.broker.test_broker import CLIENT, enqueue, finished, ready


@pytest.fixture
def app_broker(store: QueueStore, tmp_path: Path) -> Broker:
    # The broker's node is the store's (fleetd opens its store with node.name).
    env = {"HOME": str(tmp_path), "FLEET_CODEX_MODE": "app-server", "FLEET_NODE_NAME": store.node}
    return Broker(store, load_config(env))


def refusal(out: list[ToPeer]) -> m.ErrorReply:
    [reply] = out
    assert isinstance(reply.message, m.ErrorReply)
    return reply.message


def test_say_goes_to_the_worker_of_the_running_execution(app_broker: Broker) -> None:
    ready(app_broker)
    enqueue(app_broker, "a")
    out = app_broker.handle(CLIENT, b"c", m.SayToTask(task=1, message="use blue"), 3)
    assert out == [
        ToPeer(CLIENT, b"c", m.Delivered(task=1, execution=1)),
        ToPeer(b"w1", b"", m.SteerExecution(execution=1, message="use blue")),
    ]
    out = app_broker.handle(CLIENT, b"c", m.InterruptTask(task=1), 4)
    assert out[1] == ToPeer(b"w1", b"", m.InterruptExecution(execution=1))


def test_a_task_that_is_not_running_has_no_agent_to_tell(app_broker: Broker) -> None:
    enqueue(app_broker, "a")
    error = refusal(app_broker.handle(CLIENT, b"c", m.InterruptTask(task=1), 3))
    assert (error.code, "task 1 is queued, not running" in error.message) == ("conflict", True)
    ready(app_broker)
    finished(app_broker, 1)
    error = refusal(app_broker.handle(CLIENT, b"c", m.SayToTask(task=1, message="x"), 6))
    assert "task 1 is succeeded, not running" in error.message
    error = refusal(app_broker.handle(CLIENT, b"c", m.SayToTask(task=7, message="x"), 6))
    assert (error.code, error.message) == ("not_found", "no task 7")


def test_exec_mode_codex_takes_no_messages(broker: Broker) -> None:
    ready(broker)
    enqueue(broker, "a")
    error = refusal(broker.handle(CLIENT, b"c", m.SayToTask(task=1, message="x"), 3))
    assert error.code == "conflict" and "codex.mode = app-server" in error.message


def test_a_task_running_on_another_node_is_refused_naming_that_node(tmp_path: Path) -> None:
    """Several nodes share a PostgreSQL queue: a broker reaches only its own node's workers,
    so it must not say Delivered for a worker name that another node's worker holds."""
    from fleetd.broker import steering
    from shared.models import ExecutionView, TaskSpec, TaskView

    config = load_config(
        {"HOME": str(tmp_path), "FLEET_CODEX_MODE": "app-server", "FLEET_NODE_NAME": "node-a"}
    )
    elsewhere = ExecutionView(
        id=4, attempt=1, worker="w1", outcome="running", claimed_at=1, node="node-b"
    )
    task = TaskView(
        id=2,
        state="running",
        spec=TaskSpec(prompt="p"),
        attempts=1,
        enqueued_at=1,
        executions=[elsewhere],
    )
    reply, order = steering.route(task, m.SayToTask(task=2, message="x"), config)
    assert order is None and isinstance(reply, m.ErrorReply)
    assert reply.message == (
        "task 2 runs on node 'node-b': run `fleetctl say` or `interrupt` on that host"
    )
    here = ExecutionView(
        id=4, attempt=1, worker="w1", outcome="running", claimed_at=1, node="node-a"
    )
    _, order = steering.route(
        TaskView(**{**msgspec.structs.asdict(task), "executions": [here]}),
        m.InterruptTask(task=2),
        config,
    )
    assert order == ("w1", m.InterruptExecution(execution=4))
