"""A stand-in for `fleetd.runtime.background.BackgroundJob` that runs each call at once."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class InlineJob:
    """Runs each submitted call at once, on the caller's thread; `take` hands it over once."""

    fd = -1

    def __init__(self) -> None:
        self.future: Future[Any] | None = None
        self.calls: list[str] = []

    @property
    def busy(self) -> bool:
        return self.future is not None

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        assert self.future is None, "one background call at a time"
        self.calls.append(call.__name__)
        future: Future[Any] = Future()
        try:
            future.set_result(call(*args))
        except Exception as exc:  # the helper thread would hand the error over the same way
            future.set_exception(exc)
        self.future = future

    def take(self) -> Future[Any] | None:
        future, self.future = self.future, None
        return future

    def close(self) -> None:
        pass
