"""One run's token and cost budget (`--max-tokens`, `--max-cost`, or `[budget]`'s defaults),
checked against the usage the agent reports as it runs, and its cost from `[prices]`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import FleetConfig, Price
from shared.models import TaskSpec, TokenUsage

PER_MILLION = 1_000_000


def cost_of(usage: TokenUsage, price: Price) -> float:
    """USD for `usage` at `price` (cached input at its own rate, reasoning as output)."""
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    fresh = usage.input_tokens - cached
    total = fresh * price.input + cached * price.cached_input + usage.output_tokens * price.output
    return total / PER_MILLION


@dataclass(frozen=True)
class RunBudget:
    """What one run may spend; `model` is the task's model, for the price table."""

    max_tokens: int | None
    max_cost: float | None
    model: str | None
    prices: Mapping[str, Price]

    def cost(self, usage: TokenUsage, reported: float | None, model: str | None) -> float | None:
        """The run's cost so far: the agent's own figure when it gives one, else priced by the
        model it reports (or the task's); None when neither is known."""
        if reported is not None:
            return reported
        price = self.prices.get(model or "") or self.prices.get(self.model or "")
        return cost_of(usage, price) if price is not None else None

    def exceeded(self, usage: TokenUsage, cost: float | None) -> str | None:
        """Why the run is past its budget, in words, or None."""
        if self.max_tokens is not None and usage.total_tokens > self.max_tokens:
            return f"token budget {self.max_tokens} exceeded: {usage.total_tokens} used"
        if self.max_cost is not None and cost is not None and cost > self.max_cost:
            return f"cost budget {self.max_cost:g} USD exceeded: {cost:.6g} USD used"
        return None


def run_budget(config: FleetConfig, spec: TaskSpec) -> RunBudget:
    """The task's own limits, else the config's defaults (0 there: none)."""
    defaults = config.budget
    agent_model = {"codex": config.codex.model, "claude": config.claude.model}.get(spec.agent)
    return RunBudget(
        max_tokens=spec.max_tokens or defaults.max_tokens or None,
        max_cost=spec.max_cost or defaults.max_cost or None,
        model=spec.model or agent_model,
        prices=config.prices,
    )
