"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.paths import StatePaths
from tests.support.procs import processes_under


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    """A created state directory in the test's temporary directory."""
    state = StatePaths(tmp_path / "state")
    state.create()
    return state


@pytest.fixture
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    """The test ends with no process running in or naming its temporary directory (a failing
    test's leftovers are killed). Tests that start processes use it:
    `pytestmark = pytest.mark.usefixtures("no_leftovers")`."""
    yield
    left = processes_under(tmp_path)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"
