"""A run's budget: cost from the price table or the agent's own figure, and when it is past."""

from __future__ import annotations

import pytest

from fleetd.worker.budget import RunBudget, cost_of, run_budget
from shared.config import BudgetConfig, FleetConfig, Price
from shared.models import TaskSpec, TokenUsage

PRICE = Price(input=2.0, cached_input=0.5, output=8.0)


def usage(inp: int, cached: int = 0, out: int = 0) -> TokenUsage:
    return TokenUsage(
        input_tokens=inp, cached_input_tokens=cached, output_tokens=out, total_tokens=inp + out
    )


def test_cost_prices_cached_input_apart() -> None:
    # 600 fresh at 2, 400 cached at 0.5, 100 out at 8, per million.
    assert cost_of(usage(1000, 400, 100), PRICE) == pytest.approx((1200 + 200 + 800) / 1e6)


def test_the_agents_reported_cost_is_preferred() -> None:
    budget = RunBudget(None, 1.0, "m", {"m": PRICE})
    assert budget.cost(usage(10**6), 0.25, None) == 0.25
    assert budget.cost(usage(10**6), None, None) == pytest.approx(2.0)
    assert budget.cost(usage(10**6), None, "other") == pytest.approx(2.0)  # the task's model
    assert RunBudget(None, 1.0, "unpriced", {}).cost(usage(5), None, None) is None


def test_exceeded_says_what_and_how_much() -> None:
    budget = RunBudget(200, 1.0, None, {})
    assert budget.exceeded(usage(200), None) is None
    assert budget.exceeded(usage(200, out=58), None) == "token budget 200 exceeded: 258 used"
    assert budget.exceeded(usage(1), 1.5) == "cost budget 1 USD exceeded: 1.5 USD used"
    assert budget.exceeded(usage(1), None) is None  # no price, no reported cost: not checked


def test_task_limits_override_the_config_defaults() -> None:
    config = FleetConfig(budget=BudgetConfig(max_tokens=1000, max_cost=2.0))
    assert run_budget(config, TaskSpec(prompt="p")).max_tokens == 1000
    mine = run_budget(config, TaskSpec(prompt="p", max_tokens=5, max_cost=0.5))
    assert (mine.max_tokens, mine.max_cost) == (5, 0.5)
    assert run_budget(FleetConfig(), TaskSpec(prompt="p")).max_tokens is None
