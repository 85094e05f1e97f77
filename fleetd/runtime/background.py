"""Blocking work (git, workspace hooks) off a process's event loop.

A worker or the supervisor must keep serving its sockets and heartbeats while a clone, a
commit or a hook runs, so such calls run on one helper thread; a pipe becomes readable when a
call ends, which the loop's poller sees like any socket.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol


class Job(Protocol):
    """One blocking call at a time off the loop (`BackgroundJob`; tests run calls inline)."""

    @property
    def fd(self) -> int: ...
    @property
    def busy(self) -> bool: ...
    def submit(self, call: Callable[..., Any], *args: Any) -> None: ...
    def take(self) -> Future[Any] | None: ...
    def close(self) -> None: ...


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
