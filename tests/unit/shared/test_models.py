"""Domain helpers: RFC 3339 times, flag names, and which task specs can run."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.models import (
    FLAG_HUGE,
    FLAG_NOT_JSON,
    FLAG_REDACTED,
    TaskSpec,
    flag_names,
    now_us,
    rfc3339,
    spec_problem,
)


def test_rfc3339_of_none_is_none() -> None:
    assert rfc3339(None) is None


def test_rfc3339_of_epoch() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"


def test_rfc3339_keeps_microseconds_in_utc() -> None:
    # 2023-11-14T22:13:20.123457Z
    assert rfc3339(1_700_000_000_123_457) == "2023-11-14T22:13:20.123457Z"


def test_rfc3339_pads_small_microseconds() -> None:
    assert rfc3339(1_700_000_000_000_001) == "2023-11-14T22:13:20.000001Z"


def test_rfc3339_is_exact_for_every_microsecond_of_a_second() -> None:
    base = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    wrong = [
        us for us in range(base, base + 1_000_000, 997) if rfc3339(us)[-7:-1] != f"{us % 10**6:06d}"
    ]
    assert wrong == []


def test_rfc3339_parses_back_to_the_same_instant() -> None:
    us = 1_767_225_600_654_321
    parsed = dt.datetime.fromisoformat(rfc3339(us).replace("Z", "+00:00"))
    assert parsed.tzinfo == dt.UTC
    delta = parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert delta // dt.timedelta(microseconds=1) == us


def test_now_us_is_integer_microseconds() -> None:
    value = now_us()
    assert isinstance(value, int)
    assert value > 1_700_000_000_000_000


def test_flag_names_lists_set_flags_in_bit_order() -> None:
    assert flag_names(FLAG_REDACTED | FLAG_NOT_JSON | FLAG_HUGE) == ["not_json", "huge", "redacted"]
    assert flag_names(0) == []


def test_codex_task_with_prompt_is_runnable() -> None:
    assert spec_problem(TaskSpec(prompt="fix the bug")) is None


def test_command_task_with_argv_is_runnable() -> None:
    assert spec_problem(TaskSpec(prompt="", agent="command", argv=["true"])) is None


def test_command_task_needs_argv() -> None:
    problem = spec_problem(TaskSpec(prompt="x", agent="command"))
    assert problem is not None
    assert problem.startswith("a command task needs its argv")


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_codex_task_needs_a_prompt(prompt: str) -> None:
    assert spec_problem(TaskSpec(prompt=prompt)) == "a codex task needs a prompt"


def test_codex_task_takes_no_argv() -> None:
    problem = spec_problem(TaskSpec(prompt="x", argv=["ls"]))
    assert problem == "argv (after `--`) is only for `--agent command` tasks"


@pytest.mark.parametrize("timeout", [0.0, -1.0])
def test_timeout_must_be_positive(timeout: float) -> None:
    problem = spec_problem(TaskSpec(prompt="x", timeout=timeout))
    assert problem == "timeout must be a positive number of seconds"


def test_small_positive_timeout_is_fine() -> None:
    assert spec_problem(TaskSpec(prompt="x", timeout=0.001)) is None


@pytest.mark.parametrize("attempts", [0, -3])
def test_max_attempts_must_be_at_least_one(attempts: int) -> None:
    problem = spec_problem(TaskSpec(prompt="x", max_attempts=attempts))
    assert problem == "max_attempts must be at least 1"


def test_max_attempts_of_one_is_fine() -> None:
    assert spec_problem(TaskSpec(prompt="x", max_attempts=1)) is None


@pytest.mark.parametrize("override", ["no_equals", "=value"])
def test_codex_config_overrides_need_key_equals_value(override: str) -> None:
    problem = spec_problem(TaskSpec(prompt="x", codex_config=["a=1", override]))
    assert problem == f"codex config overrides take KEY=VALUE, got {override!r}"


def test_codex_config_override_with_key_and_value_is_fine() -> None:
    assert spec_problem(TaskSpec(prompt="x", codex_config=["model=o3", "a.b=c=d"])) is None


def test_claude_only_and_turn_options_are_refused_for_other_agents() -> None:
    tools = TaskSpec(prompt="x", agent="codex", allowed_tools=["Bash"])
    assert "for `--agent claude` tasks" in (spec_problem(tools) or "")
    turns = TaskSpec(prompt="x", agent="command", argv=["true"], max_turns=2)
    assert "--max-turns is for codex" in (spec_problem(turns) or "")
    claude = TaskSpec(prompt="x", agent="claude", max_turns=2, permission_mode="plan")
    assert spec_problem(claude) is None
