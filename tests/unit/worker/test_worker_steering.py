"""`fleetctl say` and `interrupt` at the worker: to an agent that listens, else refused."""

from __future__ import annotations

import json

import pytest

from fleetd.worker.logic import Phase, Worker
from shared import messages as m
from tests.unit.worker.drive import NOW, assign, events_of, read_events, run_agent, shell

pytestmark = pytest.mark.timeout(30)


def test_an_agent_that_takes_no_messages_gets_a_refusal_recorded_and_runs_on(
    worker: Worker,
) -> None:
    worker.on_broker(assign(shell('echo \'{"type":"up"}\'; exec sleep 30')), NOW)
    read_events(worker, 1)
    out = worker.on_broker(m.SteerExecution(execution=1, message="hello"), NOW)
    out += worker.on_broker(m.InterruptExecution(execution=1), NOW)
    refusals = [json.loads(payload) for payload in events_of(out)]
    assert [(r["type"], r["what"]) for r in refusals] == [
        ("fleet.refused", "message"),
        ("fleet.refused", "interrupt"),
    ]
    assert "codex.mode = app-server" in refusals[0]["why"]
    assert worker.phase is Phase.RUNNING  # the agent was neither told nor ended
    worker.on_broker(m.CancelExecution(execution=1), NOW)
    run_agent(worker)


def test_an_order_for_another_execution_is_ignored(worker: Worker) -> None:
    worker.on_broker(assign(shell("exec sleep 30")), NOW)
    assert worker.on_broker(m.SteerExecution(execution=9, message="x"), NOW) == []
    worker.on_broker(m.CancelExecution(execution=1), NOW)
    run_agent(worker)
