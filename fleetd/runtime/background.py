"""Blocking work (git, workspace hooks) off a process's event loop, and task workspace locks.

A worker or the supervisor must keep serving its sockets and heartbeats while a clone, a
commit or a hook runs, so such calls run on one helper thread; a pipe becomes readable when a
call ends, which the loop's poller sees like any socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any


class BackgroundJob:
    """At most one blocking call at a time on a helper thread; `fd` wakes the loop when done."""

    def __init__(self, name: str) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.future: Future[Any] | None = None

    @property
    def fd(self) -> int:
        return self._read

    @property
    def busy(self) -> bool:
        return self.future is not None

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        assert self.future is None, "one background call at a time"
        self.future = self.pool.submit(call, *args)
        self.future.add_done_callback(self._wake)

    def _wake(self, _future: Future[Any]) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b".")

    def take(self) -> Future[Any] | None:
        """The finished call, once; None while it runs (or if none was submitted)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._read, 64)
        future = self.future
        if future is None or not future.done():
            return None
        self.future = None
        return future

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        os.close(self._read)
        os.close(self._write)


class TaskLock:
    """An exclusive lock on one task's worktree: held by the worker that runs the task, tried
    by garbage collection, so a worktree is never removed while a task uses it."""

    def __init__(self, workspaces_dir: Path, task: int) -> None:
        directory = workspaces_dir / ".locks"
        directory.mkdir(mode=0o700, exist_ok=True)
        self.fd = os.open(directory / str(task), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def acquire(self, wait: bool = True) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
