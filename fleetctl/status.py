"""`fleetctl status` itself, without typer: the command (fleetctl.daemon) and the lean path
that runs it before any typer app is built (fleetctl.app) both call `print_status`."""

from __future__ import annotations

import msgspec

from fleetctl.common import Session, echo, print_json, print_table, short_time
from fleetctl.display import visible_line
from shared import messages as m
from shared.models import TASK_STATES, ScheduleView, WorkerView, rfc3339
from shared.views import status_json, worker_json  # noqa: F401 (worker_json: `workers`)

WORKER_HEADERS = ("WORKER", "PID", "STATE", "TASK", "SINCE (UTC)", "NODE")


def print_status(ctl: Session, json_out: bool, node: str | None = None) -> None:
    """The daemon: pid, uptime, tasks per state, processes and workers (of `node`, or all)."""
    reply = ctl.ask(m.GetStatus())
    assert isinstance(reply, m.Status)
    if node is not None:
        reply = msgspec.structs.replace(
            reply,
            workers=on_node(reply.workers, node),
            other_workers=on_node(reply.other_workers, node),
        )
    counts = {state: reply.counts.get(state, 0) for state in TASK_STATES}
    if json_out:
        print_json(status_json(reply))
        return
    phase = reply.stopping or ("running" if reply.dispatching else "paused")
    started_by = ", started by systemd socket activation" if reply.socket_activated else ""
    echo(f"fleetd pid {reply.pid}, up {_duration(reply.uptime_s)}, {phase}{started_by}")
    echo(f"state directory: {reply.state_dir}")
    echo("tasks: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if reply.web_url:
        echo(f"dashboard: {reply.web_url} (log in with the link `fleetctl dashboard` prints)")
    for warning in reply.warnings:
        echo(f"warning: {warning}")
    print_schedule(reply.schedule)
    echo("")
    rows = [(p.role, p.pid, "alive" if p.alive else "down", p.restarts) for p in reply.processes]
    print_table(("PROCESS", "PID", "STATE", "RESTARTS"), rows)
    echo("")
    print_table(WORKER_HEADERS, worker_rows(reply.workers + reply.other_workers))


def worker_rows(workers: list[WorkerView]) -> list[tuple[object, ...]]:
    return [(w.id, w.pid, w.state, w.task, short_time(w.since), _node(w)) for w in workers]


def _node(worker: WorkerView) -> str:
    if worker.lost:
        return f"{worker.node} (lost: not heard of since {short_time(worker.seen_at or 0)})"
    return worker.node or ""


def on_node(workers: list[WorkerView], node: str | None) -> list[WorkerView]:
    """The workers of one node (`--node NAME`), or all."""
    return [w for w in workers if node is None or w.node == node]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def print_schedule(schedule: ScheduleView | None) -> None:
    """The limits in use and the holds (a spent budget, a rate-limited agent kind)."""
    if schedule is None:
        return
    for limit in schedule.limits:
        full = " (full)" if limit.running >= limit.limit else ""
        line = f"limit {limit.selector}: {limit.running} of {limit.limit} running{full}"
        echo(visible_line(line))  # selectors come from a config file: shown as text
    for hold in schedule.holds:
        echo(visible_line(f"held {hold.scope}: {hold.why}; starts again at {rfc3339(hold.until)}"))
