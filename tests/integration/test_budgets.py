"""Budgets through a real fleetd and fleetctl, with the command agent printing Codex-shaped
usage lines (exact numbers): a run cut past its token or cost budget, never retried; a
fleet budget that stops dispatch until raised; `fleetctl usage` from the stored runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.fleet import running_fleet, wait_for
from tests.support.procs import processes_under

pytestmark = pytest.mark.timeout(120)

USAGE = '{"type":"turn.completed","usage":{"input_tokens":200,"output_tokens":58}}'


def spender(then: str = "exec sleep 300") -> list[str]:
    """A command agent that reports 258 tokens, then goes on (by default: for ever)."""
    return ["--", "sh", "-c", f"echo '{USAGE}'; {then}"]


def test_a_run_past_its_token_budget_is_ended_and_not_retried(tmp_path: Path) -> None:
    with running_fleet("--workers", "1", env=dict(os.environ)) as fleet:
        task = fleet.enqueue("spend", "--max-tokens", "200", "--max-attempts", "3", *spender())
        shown = fleet.wait_state(task, "failed", "succeeded", "cancelled")
        human = fleet.ctl("show", str(task)).stdout
    assert shown["state"] == "failed"
    assert shown["attempts"] == 1 and len(shown["executions"]) == 1  # not retried
    result = shown["result"]
    assert result["failure_class"] == "budget"
    assert result["reason"] == "token budget 200 exceeded: 258 used"
    assert result["usage"]["total_tokens"] == 258
    assert result["signal"] is not None  # ended by fleetd, not by itself
    assert "token budget 200 exceeded" in human
    assert not processes_under(tmp_path)


def test_cost_from_the_price_table_and_usage_reports_it(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    # 10,000 USD per million tokens: a cent a token, so 258 tokens cost 2.58 USD.
    config.write_text('[prices."m1"]\ninput = 10000.0\noutput = 10000.0\n')
    env = {**os.environ, "FLEET_CONFIG": str(config)}
    with running_fleet("--workers", "1", env=env) as fleet:
        cut = fleet.enqueue("costly", "--model", "m1", "--max-cost", "1", *spender())
        fine = fleet.enqueue("fine", "--model", "m1", "--label", "team=web", *spender("true"))
        cut_shown = fleet.wait_state(cut, "failed", "succeeded")
        fleet.wait_state(fine, "succeeded")
        by_agent = fleet.json("usage", "--by", "agent")
        by_label = fleet.json("usage", "--by", "label", "--since", "1h")
        human = fleet.ctl("usage").stdout
    assert cut_shown["result"]["failure_class"] == "budget"
    assert cut_shown["result"]["reason"] == "cost budget 1 USD exceeded: 2.58 USD used"
    [row] = by_agent["rows"]
    assert (row["key"], row["tasks"], row["executions"], row["tokens"]) == ("command", 2, 2, 516)
    assert row["cost_usd"] == pytest.approx(5.16)
    keys = {r["key"]: r["tokens"] for r in by_label["rows"]}
    assert keys == {"team=web": 258, "(no label)": 258}
    assert "total: 516 tokens, 5.1600 USD" in human


def test_a_spent_fleet_budget_stops_dispatch_until_raised(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("[budget]\ntokens_per_day = 500\n")
    env = {**os.environ, "FLEET_CONFIG": str(config)}
    with running_fleet("--workers", "1", env=env) as fleet:
        first = fleet.enqueue("one", *spender("true"))
        fleet.wait_state(first, "succeeded")
        second = fleet.enqueue("two", *spender("true"))
        fleet.wait_state(second, "succeeded")  # 258 < 500: it started; now 516 are spent
        third = fleet.enqueue("three", *spender("true"))
        status = json.loads(fleet.ctl("status", "--json").stdout)
        [hold] = status["schedule"]["holds"]
        assert hold["scope"] == "*" and "516 tokens used" in hold["why"]
        assert "held *: tokens budget of 500 tokens per 24 h spent" in fleet.ctl("status").stdout
        assert fleet.show(third)["state"] == "queued"
        config.write_text("[budget]\ntokens_per_day = 5000\n")
        fleet.ctl("reload")
        fleet.wait_state(third, "succeeded")
        wait_for(lambda: fleet.status().schedule.holds == [], 10, what="the hold to lift")


def test_a_rate_limited_agent_kind_is_held_back(tmp_path: Path) -> None:
    env = {**os.environ, "FLEET_BUDGET_RATE_LIMIT_HOLD_SECONDS": "3600"}
    refused = '{"type":"error","message":"unexpected status 429 Too Many Requests: slow down"}'
    with running_fleet("--workers", "1", env=env) as fleet:
        limited = fleet.enqueue("limited", "--", "sh", "-c", f"echo '{refused}'; exit 1")
        wait_for(
            lambda: (
                fleet.show(limited)["attempts"] == 1 and fleet.show(limited)["state"] == "queued"
            ),
            30,
            what="the rate-limited run to be put back",
        )
        other = fleet.enqueue("next", "--", "true")
        status = json.loads(fleet.ctl("status", "--json").stdout)
        [hold] = status["schedule"]["holds"]
        assert hold["scope"] == "agent:command" and "rate-limited" in hold["why"]
        assert fleet.show(other)["state"] == "queued"
        assert fleet.show(limited)["result"] is None
        [execution] = fleet.show(limited)["executions"]
        assert execution["result"]["rate_limited"] is True
