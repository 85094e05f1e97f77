"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fleet import Fleet, running_fleet


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """A real fleetd with 2 workers in a fresh state directory."""
    with running_fleet("--workers", "2") as started:
        yield started
