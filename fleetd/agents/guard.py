"""A plug-in adapter's summary with its failures contained: a bug in it fails its own run.

An adapter's summary is called for every output line on the worker's loop; an exception there
would end the worker, requeue the task and (the same task, the same bug) soon stop the whole
fleet as a crash loop. Wrapped, the first exception is logged with its traceback, the summary
is read no more, and the run fails at its end with a permanent reason that names the adapter.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, TypeVar, cast

from loguru import logger

from fleetd.agents.base import AgentSummary
from fleetd.agents.codex_events import AgentLine
from shared.models import ExecutionResult, FailureClass, TokenUsage

T = TypeVar("T")


class GuardedSummary:
    """`inner`'s answers, or neutral ones once any of its calls has raised.

    Not a subclass: AgentSummary's fields have class-level defaults, which would shadow the
    inner summary's values that `__getattr__` reads through. It answers every call the
    worker and the failure rules make of an `AgentSummary` (`as_summary` says so to types).
    """

    def __init__(self, inner: AgentSummary, agent: str, mask: Callable[[bytes], bytes]) -> None:
        # Not the dataclass's fields: every field read goes to `inner` (see __getattr__).
        self._inner = inner
        self._agent = agent
        self._mask = mask
        self.broken: str | None = None

    def __getattr__(self, name: str) -> Any:
        # Only called for what this object lacks: the inner summary's fields (errors,
        # commands, work_items, thread_id, ...), read by the failure rules and by `into`.
        return getattr(self.__dict__["_inner"], name)

    def feed(self, payload: bytes, parsed: AgentLine | None) -> None:
        if self.broken is None:
            self._call("reading an output line", self._inner.feed, None, payload, parsed)

    def failure(self) -> str | None:
        found = self._call("judging the run", self._inner.failure, None)
        return self.broken or found

    def verdict(self, exit_code: int | None, signal: int | None) -> tuple[FailureClass, str] | None:
        found = self._call("judging the run", self._inner.verdict, None, exit_code, signal)
        return ("permanent", self.broken) if self.broken is not None else found

    def token_usage(self) -> TokenUsage:
        return self._call("counting tokens", self._inner.token_usage, TokenUsage())

    def spent(self) -> tuple[TokenUsage, float | None, str | None]:
        return self._call("counting tokens", self._inner.spent, (TokenUsage(), None, None))

    def into(self, result: ExecutionResult) -> ExecutionResult:
        return self._call("filling the result", self._inner.into, result, result)

    def _call(self, doing: str, method: Callable[..., T], fallback: T, *args: Any) -> T:
        if self.broken is not None:
            return fallback
        try:
            return method(*args)
        except Exception as exc:
            self.broken = contained(self._agent, f"summary failed {doing}", exc, self._mask)
            return fallback


def as_summary(guarded: GuardedSummary) -> AgentSummary:
    """`guarded`, typed as the summary it stands for (it delegates every field read)."""
    return cast(AgentSummary, guarded)


def contained(agent: str, what: str, exc: Exception, mask: Callable[[bytes], bytes]) -> str:
    """Log a plug-in's exception and say it in one line. Its text may quote what the adapter
    read (a masked line, the host's environment): masked, in the log and in the result."""
    said = mask(f"the {agent!r} agent adapter's {what}: {type(exc).__name__}: {exc}".encode())
    where = "".join(traceback.format_tb(exc.__traceback__))  # source lines, not values
    logger.error("{}\n{}", said.decode(errors="replace"), where)
    return said.decode(errors="replace")
