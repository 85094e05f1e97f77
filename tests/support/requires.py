"""Skips for tests that need a tool or root: allowed on a laptop, never in CI.

A test that silently skips in CI is no coverage, so under `CI` (set by `.ci/run`, which also
installs the tools) these marks skip nothing and a missing tool fails the test.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = bool(os.environ.get("CI"))


def needs_tools(*names: str) -> pytest.MarkDecorator:
    """Skip (outside CI) when one of these executables is not on PATH."""
    missing = [name for name in names if shutil.which(name) is None]
    return pytest.mark.skipif(
        bool(missing) and not IN_CI, reason=f"needs {', '.join(missing)} (CI installs them)"
    )


def needs_root() -> pytest.MarkDecorator:
    """Skip (outside CI) unless running as root; CI runs as root."""
    return pytest.mark.skipif(os.geteuid() != 0 and not IN_CI, reason="needs root")


def needs_codex() -> list[pytest.MarkDecorator]:
    """The marks of a test that runs the real Codex CLI: `e2e`, and a skip (outside CI) when
    the pinned binary is not installed (`make setup` installs it under .tools/codex)."""
    from tests.support.codex_env import codex_binary

    binary = codex_binary()
    skip = pytest.mark.skipif(
        not binary.is_file() and not IN_CI,
        reason=f"no codex binary at {binary}: run `make setup`, or set FLEET_CODEX_BIN",
    )
    return [pytest.mark.e2e, skip]


def needs_claude() -> list[pytest.MarkDecorator]:
    """The marks of a test that runs the real Claude Code CLI: `e2e`, and a skip (outside CI)
    when the pinned binary is not installed (`make setup` installs it under .tools/claude)."""
    from tests.support.claude_env import claude_binary

    binary = claude_binary()
    skip = pytest.mark.skipif(
        not binary.is_file() and not IN_CI,
        reason=f"no claude binary at {binary}: run `make setup`, or set FLEET_CLAUDE_BIN",
    )
    return [pytest.mark.e2e, skip]
