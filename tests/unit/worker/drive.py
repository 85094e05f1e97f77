"""Driving the worker's state machine without sockets: messages and `now` in, Outgoing out.

Agents are real processes (`/bin/sh` scripts); their output is read by waiting on their
file descriptors with a bounded `select`, never by sleeping. Time is passed in explicitly, so
heartbeats, timeouts, seal waits and resends fire exactly when a test says. Workspace steps
run inline on the test's thread (`InlineJob`), so the phase they end is left by calling
`on_job_done`, as the process loop does when the helper thread's pipe wakes it.
"""

from __future__ import annotations

import select
import time
from typing import Any

from fleetd.worker.logic import Outgoing, Phase, ToBroker, ToRecorder, Worker
from shared import messages as m
from shared.models import TaskSpec

NOW = 1000.0  # the tests' monotonic clock; they move it by hand
WAIT_SECONDS = 20.0  # the most any test waits for an agent's output
# The clock the agent's fds are asked for at: past any output rest (`worker.output_batch_ms`),
# which the frozen test clock would never reach; test_output_rest.py drives the rest itself.
PAST_REST = float("inf")


# --- building messages ------------------------------------------------------------------------


def shell(script: str, **options: Any) -> TaskSpec:
    """A command task running `script` with /bin/sh (it gets the prompt on stdin)."""
    return TaskSpec(prompt="p", agent="command", argv=["/bin/sh", "-c", script], **options)


def assign(spec: TaskSpec, task: int = 1, execution: int = 1, **fields: Any) -> m.Assign:
    return m.Assign(
        task=task, execution=execution, attempt=1, spec=spec, lease_expires_at=0, **fields
    )


# --- reading what the worker sends ------------------------------------------------------------


def to_broker(out: list[Outgoing], kind: type[m.Message] = m.Message) -> list[m.Message]:
    return [o.message for o in out if isinstance(o, ToBroker) and isinstance(o.message, kind)]


def to_recorder(out: list[Outgoing]) -> list[m.Message]:
    return [m.RECORDER_REQUESTS.decode(o.payload) for o in out if isinstance(o, ToRecorder)]


def events_of(out: list[Outgoing]) -> list[bytes]:
    """The payloads of every event in the batches sent to the recorder."""
    return [
        event.payload
        for message in to_recorder(out)
        if isinstance(message, m.EventBatch)
        for event in message.events
    ]


def stream_end(out: list[Outgoing]) -> m.StreamEnd:
    [end] = [message for message in to_recorder(out) if isinstance(message, m.StreamEnd)]
    return end


def finished(out: list[Outgoing]) -> m.Finished:
    [report] = to_broker(out, m.Finished)
    assert isinstance(report, m.Finished)
    return report


# --- driving it -------------------------------------------------------------------------------


def run_agent(worker: Worker, now: float = NOW) -> list[Outgoing]:
    """Feed the agent's output to the worker until the agent is done and the worker moved on
    from RUNNING (waiting on the agent's fds, bounded; `now` stays where the test put it)."""
    out: list[Outgoing] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while worker.phase is Phase.RUNNING:
        assert time.monotonic() < deadline, "the agent did not end in time"
        fds = worker.fds(PAST_REST)
        if fds:
            ready, _, _ = select.select(fds, [], [], 0.2)
            for fd in ready:
                out += worker.on_agent_fd(fd, now)
        out += worker.step(now)
    return out


def read_events(worker: Worker, count: int, now: float = NOW) -> list[Outgoing]:
    """Feed the running agent's output to the worker until it printed `count` events."""
    out: list[Outgoing] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while len(events_of(out)) < count:
        assert time.monotonic() < deadline, f"the agent did not print {count} events in time"
        ready, _, _ = select.select(worker.fds(PAST_REST), [], [], 0.2)
        for fd in ready:
            out += worker.on_agent_fd(fd, now)
    return out


def seal(worker: Worker, out: list[Outgoing], now: float = NOW) -> list[Outgoing]:
    """The recorder confirms the stream the worker just ended, as stored in full."""
    end = stream_end(out)
    sealed = m.StreamSealed(task=end.task, execution=end.execution, last_seq=end.last_seq)
    return worker.on_recorder(sealed, now)


def complete(worker: Worker, spec: TaskSpec, execution: int = 1) -> m.Finished:
    """One whole attempt: assigned, run, sealed, reported and acknowledged; its report."""
    worker.on_broker(assign(spec, execution=execution), NOW)
    out = run_agent(worker)
    report = finished(seal(worker, out))
    worker.on_broker(m.FinishAck(execution=execution), NOW)
    assert worker.phase is Phase.IDLE
    return report
