"""Facts about processes (through psutil, the one place fleetd reads them) and ending groups.

psutil reads a process's start time and state, and knows the kernel's quirks (a command name
with spaces or parentheses, a zombie, a pid that vanished mid-read); the one `/proc` file
fleetd reads itself is the list of a process's children (see `direct_children`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil


def start_time(pid: int) -> float | None:
    """When a process started (seconds since the epoch, as psutil derives it from the boot time
    and `/proc/<pid>/stat` field 22, so the same process always gives the same value), or None
    if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def direct_children(pid: int | None = None) -> list[int]:
    """Pids whose parent is `pid` (default: this process).

    Read from `/proc/<pid>/task/*/children`, not psutil: psutil finds children by reading every
    process's stat file (1.4 ms with 75 processes here, against 41 us), and the supervisor
    asks every second.
    """
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid or os.getpid()}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(p) for p in (task / "children").read_text().split())
    return found


def status(pid: int) -> str | None:
    """psutil's status of a process (`psutil.STATUS_ZOMBIE`, ...), or None if it is gone."""
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return None


def session_of(pid: int) -> int | None:
    """The session id of a process, or None if it is gone."""
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a whole process group; False if the group is gone (or not ours)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
