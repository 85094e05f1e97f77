"""The broker's schedule, without SQL: the concurrency limits, the fleet's rolling budgets, and
agent kinds held back after a rate limit; each claim asks it for the `Gate` of the moment.

Spend is loaded from the executions that finished inside the window (the store's rows), so
it survives restarts, then kept up to date as runs finish (`add`), without reading the
table again; a scope whose cap is spent starts nothing until enough of that spend has slid
out of the window (running tasks finish). Time is passed in, never read here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fleetd.broker.scheduling import Gate, Hold, limits_of
from shared.config import BudgetConfig, ScopeBudget
from shared.models import HoldView, LimitUse, ScheduleView, TaskSpec
from shared.selectors import Selector, parse_selector

US = 1_000_000
MAX_HOLD_DOUBLINGS = 4  # a rate-limit hold grows to 16 times the configured one at most


@dataclass(frozen=True)
class Spend:
    """One finished execution's spend, with its task's spec (what the scopes match)."""

    finished_at: int
    tokens: int
    cost_usd: float
    spec: TaskSpec


class Schedule:
    """Limits, budget holds and rate-limit holds; `gate(now)` is what a claim checks."""

    def __init__(self, limits: dict[str, int], budget: BudgetConfig) -> None:
        self.configure(limits, budget)
        self.rate_holds: dict[str, Hold] = {}  # agent kind: its hold
        self.rate_streaks: dict[str, int] = {}  # agent kind: doublings of its hold

    def configure(self, limits: dict[str, int], budget: BudgetConfig) -> None:
        """Take a (re)loaded config's limits and budgets (all of them, or, if a selector is not
        one, none: the ValueError names it)."""
        parsed = limits_of(limits)
        caps = [(parse_selector(text), caps) for text, caps in budget.per.items()]
        fleet = ScopeBudget(tokens_per_day=budget.tokens_per_day, cost_per_day=budget.cost_per_day)
        if fleet.tokens_per_day or fleet.cost_per_day:
            caps.insert(0, (parse_selector("*"), fleet))
        self.limits, self.budget = parsed, budget
        self.caps: list[tuple[Selector, ScopeBudget]] = caps
        self.budget_holds: list[Hold] = []
        self.window: deque[Spend] = deque()  # the spend inside the window, oldest first
        self.loaded = False  # `load` must run (with the store's rows) before the first claim

    @property
    def window_us(self) -> int:
        return int(self.budget.window_hours * 3600 * US)

    @property
    def has_budgets(self) -> bool:
        return bool(self.caps)

    def gate(self, now: int) -> Gate:
        holds = [h for h in [*self.budget_holds, *self.rate_holds.values()] if h.until > now]
        return Gate(self.limits, tuple(holds))

    def next_change(self, now: int) -> int | None:
        """When a hold ends by itself (a claim may then succeed), or None."""
        ends = [h.until for h in self.gate(now).holds]
        return min(ends) if ends else None

    def load(self, spend: Iterable[Spend], now: int) -> None:
        """Take the window's spend as stored, and hold the scopes that spent their caps."""
        self.window = deque(sorted(spend, key=lambda s: s.finished_at))
        self.loaded = True
        self.account(now)

    def add(self, spend: Spend, now: int) -> None:
        """A run finished with this spend."""
        self.window.append(spend)
        self.account(now)

    def stale(self, now: int) -> bool:
        """A budget hold's time has come: the window slid past some of its spend."""
        return any(hold.until <= now for hold in self.budget_holds)

    def account(self, now: int) -> None:
        """Drop the spend that left the window; hold the scopes that spent their caps."""
        while self.window and self.window[0].finished_at < now - self.window_us:
            self.window.popleft()
        rows = list(self.window)
        holds = []
        for selector, caps in self.caps:
            mine = [row for row in rows if selector.matches(row.spec)]
            for kind, cap in (("tokens", caps.tokens_per_day), ("cost", caps.cost_per_day)):
                if cap:
                    hold = self._spent(selector, kind, cap, mine)
                    if hold is not None:
                        holds.append(hold)
        self.budget_holds = holds

    def _spent(self, selector: Selector, kind: str, cap: float, rows: list[Spend]) -> Hold | None:
        """The hold of a scope whose `kind` spend reached `cap`, until enough leaves the window."""
        amounts = [row.tokens if kind == "tokens" else row.cost_usd for row in rows]
        used = sum(amounts)
        if used < cap:
            return None
        left = used
        until = 0
        for row, amount in zip(rows, amounts, strict=True):
            left -= amount
            until = row.finished_at + self.window_us
            if left < cap:
                break
        hours = f"{self.budget.window_hours:g} h"
        spent = f"{used:.4g} USD" if kind == "cost" else f"{used:g} tokens"
        limit = f"{cap:g} USD" if kind == "cost" else f"{cap:g} tokens"
        why = f"{kind} budget of {limit} per {hours} spent ({spent} used)"
        return Hold(selector, until, why)

    def rate_limited(self, agent: str, now: int) -> Hold | None:
        """A run of `agent` was rate-limited: its kind starts nothing for the hold, which
        doubles (up to 16 times) while its runs keep being refused within a hold's length of
        the last one ending."""
        base = self.budget.rate_limit_hold_seconds
        if base <= 0:
            return None
        last = self.rate_holds.get(agent)
        again = last is not None and now - last.until < base * US
        streak = min(self.rate_streaks.get(agent, 0) + 1, MAX_HOLD_DOUBLINGS) if again else 0
        self.rate_streaks[agent] = streak
        seconds = base * 2**streak
        hold = Hold(
            parse_selector(f"agent:{agent}"),
            now + int(seconds * US),
            f"{agent} was rate-limited by its model provider; holding its tasks {seconds:g} s",
        )
        self.rate_holds[agent] = hold
        return hold

    def view(self, running: Callable[[], Iterable[TaskSpec]], now: int) -> ScheduleView:
        """Each limit's use and the holds in force, for `status`. `running` (the running tasks'
        specs, one decode each) is called only when there is a limit to count them against:
        a status of a fleet without limits costs nothing per running task."""
        gate = self.gate(now)
        counts = gate.counts(running()) if self.limits else {}
        return ScheduleView(
            limits=[
                LimitUse(selector=sel.text, running=counts[sel], limit=cap)
                for sel, cap in self.limits.items()
            ],
            holds=[HoldView(scope=h.selector.text, until=h.until, why=h.why) for h in gate.holds],
        )
