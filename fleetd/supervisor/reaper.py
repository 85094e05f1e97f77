"""Orphans and zombies: what the supervisor, as child subreaper (or PID 1), must clean up.

When a worker dies, its agent is re-parented to the supervisor. Agents run in sessions of
their own, so any direct child in another session is an orphaned agent (or a descendant that
left its group, like Codex's sandbox helper): its group is ended and it is reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from loguru import logger


def direct_children(pid: int | None = None) -> list[int]:
    """Pids whose parent is `pid` (default: this process), from /proc."""
    pid = pid or os.getpid()
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found.extend(int(p) for p in (task / "children").read_text().split())
    return found


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, session id) of a process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[3])


def reap_orphans(keep: set[int]) -> list[int]:
    """End and reap orphaned agents; reap any zombie child not in `keep`. Returns pids handled."""
    own_session = os.getsid(0)
    handled = []
    for pid in direct_children():
        if pid in keep:
            continue
        stat = _stat(pid)
        if stat is None:
            continue
        state, session = stat
        if state != "Z" and session == own_session:
            continue  # one of multiprocessing's helpers; it looks after itself
        if state != "Z":
            logger.info("ending orphaned agent process group {}", pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        handled.append(pid)
    return handled
