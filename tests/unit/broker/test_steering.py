"""`fleetctl say` and `interrupt` reach the worker running the task, or are refused saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.broker.logic import Broker
from fleetd.broker.store import QueueStore
from fleetd.runtime.routing import ToPeer
from shared import messages as m
from shared.config import load_config
from tests.unit.broker.test_broker import CLIENT, enqueue, finished, ready


@pytest.fixture
def app_broker(store: QueueStore, tmp_path: Path) -> Broker:
    env = {"HOME": str(tmp_path), "FLEET_CODEX_MODE": "app-server"}
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
