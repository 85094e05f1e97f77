"""Exclusive file locks (`flock`), the one place fleetd takes them.

A lock is held by an open file descriptor and released when it is closed, also by the kernel
when the holder dies: so a free lock on a spool means its writer is gone, and a free state
directory lock means no fleetd serves it. Used for the state directory, each spool file, each
task's worktree, each repository, and the host's Codex login.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

POLL_SECONDS = 0.02
CREATE = os.O_RDWR | os.O_CREAT


class FileLock:
    """An exclusive lock on one file, from `acquire` until `release` (or the process's end)."""

    def __init__(self, path: Path, flags: int = CREATE) -> None:
        self.path = path
        self.fd = os.open(path, flags | os.O_CLOEXEC, 0o600)

    @classmethod
    def try_existing(cls, path: Path) -> FileLock | None:
        """The lock of an existing file if nobody holds it, else None (also if it is gone)."""
        try:
            lock = cls(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        if lock.acquire(wait=False):
            return lock
        lock.release()
        return None

    def acquire(self, wait: bool = True, shared: bool = False) -> bool:
        """Take the lock, waiting for it or not; False if it is held elsewhere (no wait).

        A shared lock may be held by many at once, and keeps the exclusive one from anybody.
        """
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(self.fd, mode | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    def acquire_within(self, timeout: float, still_wanted: Callable[[], None]) -> bool:
        """Wait for the lock at most `timeout` seconds; `still_wanted` may raise to give up."""
        deadline = time.monotonic() + timeout
        while not self.acquire(wait=False):
            still_wanted()
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
        return True

    def release(self) -> None:
        """Closing the descriptor releases the lock; safe to call twice."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
