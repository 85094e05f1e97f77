"""Orphans and zombies: what the supervisor, as child subreaper (or PID 1), must clean up.

When a worker dies, its agent is re-parented to the supervisor. Agents run in sessions of
their own, so any direct child in another session is an orphaned agent (or a descendant that
left its group, like Codex's sandbox helper): its group is ended and it is reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal

from loguru import logger

from fleetd.runtime.processes import direct_children, has_exited, session_of, signal_group


def reap_orphans(keep: set[int]) -> list[int]:
    """End and reap orphaned agents; reap any zombie child not in `keep`. Returns pids handled."""
    own_session = os.getsid(0)
    handled = []
    for pid in direct_children():
        if pid in keep:
            continue
        if not has_exited(pid):
            session = session_of(pid)
            if session is None or session == own_session:
                continue  # gone, or one of multiprocessing's helpers: it looks after itself
            logger.info("ending orphaned agent process group {}", pid)
            signal_group(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        handled.append(pid)
    return handled
