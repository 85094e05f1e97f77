"""Daemon commands: status, workers, drain, stop."""

from __future__ import annotations

import contextlib
import os
import select
import time
from typing import Annotated

import msgspec
import typer

from fleetctl.common import (
    EXIT_FAILURE,
    JsonOption,
    Session,
    fail,
    print_json,
    print_table,
    session,
    short_time,
)
from shared import messages as m
from shared.client import probe
from shared.errors import DaemonUnavailable
from shared.models import TASK_STATES, WorkerView, rfc3339

app = typer.Typer()


def _worker_json(worker: WorkerView) -> dict[str, object]:
    return {
        "id": worker.id,
        "pid": worker.pid,
        "state": worker.state,
        "task": worker.task,
        "execution": worker.execution,
        "since": rfc3339(worker.since),
    }


def _worker_rows(workers: list[WorkerView]) -> list[tuple[object, ...]]:
    return [(w.id, w.pid, w.state, w.task, short_time(w.since)) for w in workers]


WORKER_HEADERS = ("WORKER", "PID", "STATE", "TASK", "SINCE (UTC)")


@app.command()
def status(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """The daemon: pid, uptime, tasks per state, processes and workers."""
    reply = session(ctx).ask(m.GetStatus())
    assert isinstance(reply, m.Status)
    counts = {state: reply.counts.get(state, 0) for state in TASK_STATES}
    if json_out:
        out = msgspec.to_builtins(reply)
        out["counts"] = counts
        out["workers"] = [_worker_json(w) for w in reply.workers]
        print_json(out)
        return
    phase = reply.stopping or ("running" if reply.dispatching else "paused")
    typer.echo(f"fleetd pid {reply.pid}, up {_duration(reply.uptime_s)}, {phase}")
    typer.echo(f"state directory: {reply.state_dir}")
    typer.echo("tasks: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for warning in reply.warnings:
        typer.echo(f"warning: {warning}")
    typer.echo("")
    rows = [(p.role, p.pid, "alive" if p.alive else "down", p.restarts) for p in reply.processes]
    print_table(("PROCESS", "PID", "STATE", "RESTARTS"), rows)
    typer.echo("")
    print_table(WORKER_HEADERS, _worker_rows(reply.workers))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@app.command()
def workers(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """The workers: id, pid, idle or busy, current task, since when."""
    reply = session(ctx).ask(m.ListWorkers())
    assert isinstance(reply, m.WorkerList)
    if json_out:
        print_json([_worker_json(w) for w in reply.workers])
    else:
        print_table(WORKER_HEADERS, _worker_rows(reply.workers))


@app.command()
def drain(
    ctx: typer.Context,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="return when fleetd exits")] = True,
    json_out: JsonOption = False,
) -> None:
    """Stop dispatching; running tasks finish; then fleetd exits."""
    _shutdown(session(ctx), m.Drain(), wait, None, json_out)


@app.command()
def stop(
    ctx: typer.Context,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.1, help="bound on the whole shutdown, in seconds"),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="return when fleetd exits")] = True,
    json_out: JsonOption = False,
) -> None:
    """Stop dispatching, end running agents gracefully, put their tasks back, exit."""
    _shutdown(session(ctx), m.Stop(timeout=timeout), wait, timeout, json_out)


def _shutdown(
    state: Session, request: m.Message, wait: bool, bound: float | None, json_out: bool
) -> None:
    before = state.ask(m.GetStatus())
    assert isinstance(before, m.Status)
    state.ask(request)
    verb = "draining" if isinstance(request, m.Drain) else "stopping"
    if not wait:
        _report(json_out, before.pid, verb, exited=False)
        return
    if not json_out:
        typer.echo(f"fleetd (pid {before.pid}) is {verb}…")
    deadline = None if bound is None else time.monotonic() + bound + 5.0
    socket_path = state.control_socket()
    while deadline is None or time.monotonic() < deadline:
        if not _alive(before.pid):
            break
        with contextlib.suppress(DaemonUnavailable):
            probe(socket_path)
            time.sleep(0.05)
            continue
        if not _alive(before.pid):
            break
        time.sleep(0.05)
    else:
        fail(f"fleetd (pid {before.pid}) is still running after {bound:g} s", EXIT_FAILURE)
    _report(json_out, before.pid, "stopped", exited=True)


def _alive(pid: int) -> bool:
    """Is the process still running? One that exited, even if not yet reaped, is not: its
    pidfd becomes readable when it exits."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    finally:
        os.close(fd)
    return not readable


def _report(json_out: bool, pid: int, what: str, exited: bool) -> None:
    if json_out:
        print_json({"pid": pid, "state": what, "exited": exited})
    else:
        typer.echo(f"fleetd (pid {pid}) {what}")
