"""Per-task budgets with the real agents against the loopback model servers, whose scripted
usage makes the numbers exact: Claude Code cut mid-run (in the middle of a tool call, its
next request never made), Codex cut at its turn's totals (what exec mode reports)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.anthropic_server import AnthropicServer
from tests.support.claude_env import claude_fleet_env, enqueue_claude
from tests.support.codex_fleet import MODEL, TERMINAL, enqueue_codex, fleet_env, workdir
from tests.support.fleet import running_fleet
from tests.support.model_server import ModelServer
from tests.support.procs import processes_under
from tests.support.requires import needs_claude, needs_codex

F = TypeVar("F", bound=Callable[..., Any])


def marked(marks: list[pytest.MarkDecorator]) -> Callable[[F], F]:
    """A test with each of `marks` (the requires helpers give lists, for `pytestmark`)."""

    def apply(test: F) -> F:
        for mark in marks:
            test = mark(test)
        return test

    return apply


@pytest.fixture
def anthropic() -> Iterator[AnthropicServer]:
    with AnthropicServer() as server:
        yield server


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer() as started:
        yield started


@marked(needs_claude())
@pytest.mark.timeout(240)
def test_claude_is_ended_mid_run_past_its_token_budget(
    tmp_path: Path, anthropic: AnthropicServer
) -> None:
    # Claude Code prints each assistant message with the usage the stream began with: its
    # input and 1 output token. The first reply's 250 + 1 spend the budget while its 60 s
    # command runs, so the second reply (writing two.txt) is never asked for.
    # (Claude Code refuses a plain `sleep 60` in Bash, but not a program that waits.)
    slow = anthropic.bash("python3 -c 'import time; time.sleep(60)'; echo one > one.txt")
    first = dataclasses.replace(slow, input_tokens=250, output_tokens=108)
    anthropic.script([first, anthropic.bash("echo two > two.txt"), anthropic.text("all done")])
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=claude_fleet_env(tmp_path, anthropic)) as fleet:
        task = enqueue_claude(fleet, "spend", work, "--max-tokens", "200", "--max-attempts", "3")
        shown = fleet.wait_state(task, *TERMINAL, timeout=120)
    assert not processes_under(work), "claude outlived its budget"
    assert shown["state"] == "failed", shown
    result = shown["result"]
    assert result["failure_class"] == "budget"
    assert result["reason"] == "token budget 200 exceeded: 251 used"
    assert shown["attempts"] == 1 and len(shown["executions"]) == 1
    assert not (work / "one.txt").exists() and not (work / "two.txt").exists()
    assert len([r for r in anthropic.requests if r.path == "/v1/messages"]) == 1


@marked(needs_codex())
@pytest.mark.timeout(120)
def test_codex_past_its_token_budget_fails_with_the_exact_count(
    tmp_path: Path, server: ModelServer
) -> None:
    server.script(
        [
            dataclasses.replace(server.shell("echo hi", call_id="c1"), input_tokens=17),
            server.message("done", input_tokens=123, output_tokens=45),
        ]
    )
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=fleet_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "spend", work, "--max-tokens", "150")
        shown = fleet.wait_state(task, *TERMINAL)
    assert shown["state"] == "failed", shown
    # 17 + 123 input, 10 + 45 output: the turn's totals, as codex exec reports them.
    assert shown["result"]["reason"] == "token budget 150 exceeded: 195 used"
    assert shown["result"]["failure_class"] == "budget"
    assert shown["attempts"] == 1


@marked(needs_codex())
@pytest.mark.timeout(120)
def test_codex_cost_is_priced_from_the_table(tmp_path: Path, server: ModelServer) -> None:
    server.script([server.message("done", input_tokens=140, output_tokens=50)])
    config = tmp_path / "fleet.toml"
    config.write_text(f'[prices."{MODEL}"]\ninput = 1000.0\noutput = 2000.0\n')
    env = {**fleet_env(tmp_path, server), "FLEET_CONFIG": str(config)}
    with running_fleet("--workers", "1", env=env) as fleet:
        task = enqueue_codex(fleet, "spend", workdir(tmp_path, "work"), "--max-cost", "0.2")
        shown = fleet.wait_state(task, *TERMINAL)
        usage = fleet.json("usage", "--by", "task")
    # 140 × 1000 + 50 × 2000 USD per million tokens: 0.24 USD.
    assert shown["result"]["reason"] == "cost budget 0.2 USD exceeded: 0.24 USD used"
    assert shown["result"]["cost_usd"] == pytest.approx(0.24)
    [row] = usage["rows"]
    assert (row["key"], row["tokens"], row["cost_usd"]) == (str(task), 190, pytest.approx(0.24))
