"""What may start now, without SQL: the concurrency limits, and the scopes held back (a spent
fleet budget, a rate-limited agent kind). The store asks a `Gate` about each queued task in
claim order and takes the first that fits, so a full limit blocks only its own tasks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from shared.selectors import Scoped, Selector, parse_selector


class Scope(msgspec.Struct, frozen=True):
    """The fields of a stored spec that selectors match: decoding only these (msgspec skips
    the rest, the prompt included) keeps a claim that reads past many held tasks cheap."""

    agent: str = "codex"
    repo: str | None = None
    labels: dict[str, str] = {}


decode_scope = msgspec.json.Decoder(Scope).decode


@dataclass(frozen=True)
class Hold:
    """Tasks of a scope start nothing until `until` (µs), and why."""

    selector: Selector
    until: int
    why: str


@dataclass(frozen=True)
class Closed:
    """Scopes with no room: every task, or these agent kinds and repositories."""

    everything: bool = False
    agents: tuple[str, ...] = ()
    repos: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gate:
    """The limits (selector: most running tasks it matches) and the holds of one claim."""

    limits: Mapping[Selector, int] = field(default_factory=dict)
    holds: tuple[Hold, ...] = ()

    @property
    def open(self) -> bool:
        """Nothing to check: the claim takes the first task in order."""
        return not self.limits and not self.holds

    def counts(self, running: Iterable[Scoped]) -> dict[Selector, int]:
        """How many of the running tasks each limit counts."""
        specs = list(running)
        return {sel: sum(sel.matches(spec) for spec in specs) for sel in self.limits}

    def closed(self, running: Mapping[Selector, int]) -> Closed:
        """What cannot start anything now, as far as the query can tell it."""
        shut = [h.selector for h in self.holds]
        shut += [sel for sel, cap in self.limits.items() if running.get(sel, 0) >= cap]
        return Closed(
            everything=any(sel.kind == "all" for sel in shut),
            agents=tuple(sorted({sel.value for sel in shut if sel.kind == "agent"})),
            repos=tuple(sorted({sel.value for sel in shut if sel.kind == "repo"})),
        )

    def fits(self, spec: Scoped, running: Mapping[Selector, int]) -> bool:
        """Whether `spec` may start with `running` counted against the limits."""
        for hold in self.holds:
            if hold.selector.matches(spec):
                return False
        return all(
            running.get(sel, 0) < cap for sel, cap in self.limits.items() if sel.matches(spec)
        )


def limits_of(table: Mapping[str, int]) -> dict[Selector, int]:
    """The `[limits]` table as selectors (the config checked their spelling)."""
    return {parse_selector(text): cap for text, cap in table.items()}
