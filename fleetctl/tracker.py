"""`fleetctl tracker`: each watched repository's last poll, the rate-limit budget, the errors;
and the issue and pull request a task is linked to (for `fleetctl show`).

Read from the status file the tracker rewrites after every poll (`shared.tracker`): the
tracker has no socket, and this answers even while fleetd is stopped (saying how old it is).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

from fleetctl.common import (
    EXIT_USAGE,
    JsonOption,
    echo,
    fail,
    one_line,
    print_json,
    print_table,
    session,
)
from fleetctl.display import visible_line
from shared.config import load_config
from shared.errors import FleetError
from shared.tracker import TaskLink, TrackerStatus, read_status, task_link

app = typer.Typer()


def state_root(state_dir: Path | None) -> Path:
    flags = {"state_dir": str(state_dir) if state_dir else None}
    try:
        return load_config(os.environ, None, flags).paths().root
    except FleetError as exc:
        fail(str(exc), EXIT_USAGE)


def link_of(state_dir: Path | None, task: int) -> TaskLink | None:
    """The issue and pull request of `task`, if the tracker made it."""
    return task_link(state_root(state_dir), task)


def link_fields(link: TaskLink | None) -> list[tuple[str, Any]]:
    if link is None:
        return []
    return [("issue", link.issue_url or link.issue), ("pull request", link.pull_url)]


@app.command()
def tracker(
    ctx: typer.Context,
    json_out: JsonOption = False,
) -> None:
    """Each watched repository: its last poll, the rate-limit budget left and its errors."""
    status = read_status(state_root(session(ctx).state_dir))
    if status is None:
        fail(
            "no tracker has run in this state directory: add a [tracker.github] table to "
            "fleetd's config (see the README's tracker section) and restart fleetd"
        )
    if json_out:
        print_json(status)
        return
    _human(status)


def _human(status: TrackerStatus) -> None:
    age = max(time.time() - status.updated_at, 0.0)
    echo(
        visible_line(f"{status.tracker} at {status.api_url}, tracker pid {status.pid}, ")
        + f"status written {_ago(age)} ago"
    )
    if status.rate_remaining is not None:
        reset = _clock(status.rate_reset_at)
        echo(f"rate limit: {status.rate_remaining} of {status.rate_limit} left, resets {reset}")
    rows = [
        (
            repo.repo,
            repo.phase,
            repo.polls,
            _clock(repo.last_poll),
            _clock(repo.next_poll),
            repo.errors,
            one_line(repo.error, 80),
        )
        for repo in status.repos
    ]
    print_table(("REPOSITORY", "PHASE", "POLLS", "LAST POLL", "NEXT", "ERRORS", "ERROR"), rows)
    linked = [link for link in status.links if link.pull_url]
    if linked:
        echo("")
        print_table(
            ("TASK", "ISSUE", "PULL REQUEST"), [(k.task, k.issue, k.pull_url) for k in linked]
        )


def _clock(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return time.strftime("%H:%M:%S UTC", time.gmtime(seconds))


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
