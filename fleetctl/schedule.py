"""Scheduling commands: priority, usage, reload; and the times `--not-before` and `--since` take."""

from __future__ import annotations

import datetime as dt
import re
import typing
from typing import Annotated, Any

import msgspec
import typer

from fleetctl.common import EXIT_USAGE, JsonOption, echo, fail, print_json, print_table, session
from shared import messages as m
from shared.models import PRIORITY_BOUND, now_us, rfc3339

app = typer.Typer()

_RELATIVE = re.compile(r"^[+-]?(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
USAGE_GROUPS: tuple[str, ...] = typing.get_args(m.UsageGroup)
TIME_HELP = "RFC 3339 (2026-12-02T09:00:00Z) or from now (+10m, +2h, +1d)"


def parse_time(text: str, flag: str, past: bool = False) -> int:
    """µs since the epoch from RFC 3339 or `+N[smhd]` (back from now with `past`, where
    `-1d` and `1d` both mean a day ago)."""
    match = _RELATIVE.match(text.strip())
    if match:
        offset = int(float(match[1]) * _UNIT_SECONDS[match[2]] * 1_000_000)
        return now_us() - offset if past else now_us() + offset
    try:
        stamp = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"{flag} {text!r}: give a time as {TIME_HELP}", EXIT_USAGE)
    if stamp.tzinfo is None:
        fail(f"{flag} {text!r}: give the time zone (Z or +01:00)", EXIT_USAGE)
    return max(0, int(stamp.timestamp() * 1_000_000))


# A negative priority is a value, not an option: `fleetctl priority 12 -3`.
@app.command(context_settings={"ignore_unknown_options": True})
def priority(
    ctx: typer.Context,
    task: Annotated[int, typer.Argument(help="a queued task", min=1)],
    value: Annotated[
        int,
        typer.Argument(
            help="its new priority: higher runs first (default 0; FIFO within one)",
            min=-PRIORITY_BOUND,
            max=PRIORITY_BOUND,
        ),
    ],
    json_out: JsonOption = False,
) -> None:
    """Change a queued task's priority."""
    reply = session(ctx).ask(m.SetPriority(task=task, priority=value))
    assert isinstance(reply, m.PrioritySet)
    if json_out:
        print_json(msgspec.to_builtins(reply))
    else:
        echo(f"task {reply.task}: priority {reply.priority}")


@app.command()
def usage(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(help="only executions finished since: RFC 3339, or back from now (1d, 6h)"),
    ] = None,
    by: Annotated[str, typer.Option(help="group by " + ", ".join(USAGE_GROUPS))] = "agent",
    json_out: JsonOption = False,
) -> None:
    """Tokens and cost spent by finished executions, from the queue's records."""
    if by not in USAGE_GROUPS:
        fail(f"--by {by!r}: use one of {', '.join(USAGE_GROUPS)}", EXIT_USAGE)
    start = 0 if since is None else parse_time(since, "--since", past=True)
    reply = session(ctx).ask(m.GetUsage(since=start, by=typing.cast(Any, by)))
    assert isinstance(reply, m.Usage)
    if json_out:
        print_json({"by": reply.by, "since": rfc3339(reply.since), "rows": _rows_json(reply)})
        return
    rows = [(r.key, r.tasks, r.executions, r.tokens, f"{r.cost_usd:.4f}") for r in reply.rows]
    tokens = sum(r.tokens for r in reply.rows)
    cost = sum(r.cost_usd for r in reply.rows)
    print_table((by.upper(), "TASKS", "EXECUTIONS", "TOKENS", "COST (USD)"), rows)
    if by not in ("label",):  # a task with two labels counts in two rows
        echo(f"total: {tokens} tokens, {cost:.4f} USD")


def _rows_json(reply: m.Usage) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(row) for row in reply.rows]


@app.command()
def reload(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Read the config file again: [limits] and the fleet budgets change without a restart
    (SIGHUP to fleetd does the same)."""
    reply = session(ctx).ask(m.Reload())
    assert isinstance(reply, m.Accepted)
    if json_out:
        print_json({"reloaded": True, "detail": reply.detail})
    else:
        echo(reply.detail)
