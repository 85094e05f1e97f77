"""What the tracker role tells `fleetctl`: its status file, rewritten after every poll.

The tracker has no socket of its own; it writes `tracker/status.json` in the state directory
(atomically, owner-only) and `fleetctl tracker` and `fleetctl show` read it. It holds no
secret: repositories, times, counts, error texts (which never hold the token) and links.
"""

from __future__ import annotations

from pathlib import Path

import msgspec


class RepoStatus(msgspec.Struct, kw_only=True):
    """One watched repository."""

    repo: str
    phase: str
    polls: int = 0
    last_poll: float | None = None  # Unix seconds of the last successful poll
    next_poll: float | None = None
    errors: int = 0  # consecutive failed polls
    error: str | None = None


class TaskLink(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A task's issue and, once opened, its pull request."""

    task: int
    issue: str
    issue_url: str | None = None
    pull_url: str | None = None


class TrackerStatus(msgspec.Struct, kw_only=True):
    tracker: str  # "github"
    api_url: str
    pid: int
    updated_at: float
    rate_limit: int | None = None
    rate_remaining: int | None = None
    rate_reset_at: float | None = None
    repos: list[RepoStatus] = []
    links: list[TaskLink] = []


def tracker_dir(state_dir: Path) -> Path:
    return state_dir / "tracker"


def status_file(state_dir: Path) -> Path:
    return tracker_dir(state_dir) / "status.json"


def read_status(state_dir: Path) -> TrackerStatus | None:
    """The tracker's last status, or None when no tracker has run in this state directory."""
    try:
        data = status_file(state_dir).read_bytes()
    except OSError:
        return None
    try:
        return msgspec.json.decode(data, type=TrackerStatus)
    except msgspec.DecodeError:
        return None


def task_link(state_dir: Path, task: int) -> TaskLink | None:
    """The issue and pull request of `task`, if the tracker made it (`fleetctl show`, the
    dashboard's task page and the API's task)."""
    status = read_status(state_dir)
    if status is None:
        return None
    return next((link for link in status.links if link.task == task), None)
