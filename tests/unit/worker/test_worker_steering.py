"""`fleetctl say` and `interrupt` at the worker: to an agent that listens, else refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetd.agents.base import AgentCommand, ToAgent
from fleetd.agents.command import CommandAdapter
from fleetd.worker.logic import Phase, Worker
from shared import messages as m
from shared.models import TaskSpec
from tests.unit.worker.drive import (
    NOW,
    assign,
    events_of,
    finished,
    read_events,
    run_agent,
    seal,
    shell,
)

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


class EchoConversation:
    """Says one line; the agent's echo of it ends the conversation, broken."""

    def __init__(self) -> None:
        self.finished = False
        self.failure: str | None = None

    def opening(self) -> list[ToAgent]:
        return [ToAgent(line=b"ping", event=b'{"type":"fleet.sent","line":"ping"}')]

    def on_line(self, payload: bytes) -> list[ToAgent]:
        if payload == b"ping":
            self.finished, self.failure = True, "the agent answered what fleetd cannot read"
        return []

    def say(self, text: str) -> tuple[list[ToAgent], str | None]:
        return [], None

    def interrupt(self) -> tuple[list[ToAgent], str | None]:
        return [], None


class SpokenAdapter(CommandAdapter):
    def command(self, assign: m.Assign, cwd: Path, env: dict[str, str]) -> AgentCommand:
        # Echo the first line, then read until fleetd closes stdin.
        argv = ["/bin/sh", "-c", 'read line; echo "$line"; cat >/dev/null']
        return AgentCommand(argv=argv, cwd=cwd, env=env, conversation=EchoConversation())


def test_a_conversation_is_written_to_stdin_recorded_closed_and_its_failure_kept(
    worker: Worker,
) -> None:
    worker.adapters.loaded["spoken"] = SpokenAdapter()
    out = worker.on_broker(assign(TaskSpec(prompt="p", agent="spoken")), NOW)
    out += run_agent(worker)  # ends only if fleetd closed the agent's stdin
    assert events_of(out) == [b'{"type":"fleet.sent","line":"ping"}', b"ping"]
    report = finished(seal(worker, out))
    assert report.outcome == "failed"
    assert report.result.error == "the agent answered what fleetd cannot read"
