"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.paths import StatePaths


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    """A created state directory in the test's temporary directory."""
    state = StatePaths(tmp_path / "state")
    state.create()
    return state
