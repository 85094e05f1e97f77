"""Daemon commands: status, workers, drain, stop."""

from __future__ import annotations

import os
import select
from typing import Annotated

import typer

from fleetctl.common import (
    EXIT_FAILURE,
    JsonOption,
    Session,
    fail,
    print_json,
    print_table,
    session,
)
from fleetctl.status import WORKER_HEADERS, on_node, print_status, worker_json, worker_rows
from shared import messages as m
from shared.namespaces import pid_namespace

app = typer.Typer()


NodeOption = Annotated[
    str | None,
    typer.Option("--node", metavar="NAME", help="only this node's workers (node.name)"),
]


@app.command()
def status(ctx: typer.Context, json_out: JsonOption = False, node: NodeOption = None) -> None:
    """The daemon: pid, uptime, tasks per state, processes and every node's workers."""
    print_status(session(ctx), json_out, node)


@app.command()
def workers(ctx: typer.Context, json_out: JsonOption = False, node: NodeOption = None) -> None:
    """Every node's workers: id, pid, idle or busy, current task, since when, node."""
    reply = session(ctx).ask(m.ListWorkers())
    assert isinstance(reply, m.WorkerList)
    shown = on_node(reply.workers, node)
    if json_out:
        print_json([worker_json(w) for w in shown])
    else:
        print_table(WORKER_HEADERS, worker_rows(shown))


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
    # Opened before the request, so the pid cannot pass to another process while we wait.
    watch = _pidfd(before) if wait else None
    try:
        state.ask(request)
        verb = "draining" if isinstance(request, m.Drain) else "stopping"
        if watch is None:
            _report(json_out, before, verb, exited=False, unseen=wait)
            return
        if not json_out:
            typer.echo(f"fleetd (pid {before.pid}) is {verb}…")
        # No new connection while waiting, not even a probe: under socket activation systemd
        # owns the control socket and would start fleetd again for it the moment it exits.
        timeout = None if bound is None else bound + 5.0
        readable, _, _ = select.select([watch], [], [], timeout)
        if not readable:
            fail(f"fleetd (pid {before.pid}) is still running after {bound:g} s", EXIT_FAILURE)
    finally:
        if watch is not None:
            os.close(watch)
    _report(json_out, before, "stopped", exited=True)


def _pidfd(status: m.Status) -> int | None:
    """A pidfd for fleetd, which becomes readable when it exits; None when its pid means
    nothing here (fleetd in another pid namespace, as in a container)."""
    theirs, ours = status.pid_namespace, pid_namespace()
    if theirs and ours and theirs != ours:
        return None
    try:
        return os.pidfd_open(status.pid)
    except ProcessLookupError:
        return None


def _report(
    json_out: bool, status: m.Status, what: str, exited: bool, unseen: bool = False
) -> None:
    pid, activated = status.pid, status.socket_activated
    if json_out:
        print_json({"pid": pid, "state": what, "exited": exited, "socket_activated": activated})
        return
    typer.echo(f"fleetd (pid {pid}) {what}")
    if unseen:
        typer.echo(
            f"fleetctl cannot wait for it: pid {pid} is in another pid namespace (fleetd runs"
            " in a container?); watch it from there, e.g. `docker wait`"
        )
    if activated:
        typer.echo(
            "note: fleetd is socket-activated: the next fleetctl request starts it again;"
            " `systemctl stop fleetd.socket fleetd.service` keeps it down"
        )
