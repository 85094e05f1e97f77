"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fleet import Fleet, running_fleet
from tests.support.model_server import ModelServer


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """A real fleetd with 2 workers in a fresh state directory."""
    with running_fleet("--workers", "2") as started:
        yield started


@pytest.fixture
def server() -> Iterator[ModelServer]:
    """The tests' model endpoint on 127.0.0.1 (a scripted Responses API), stopped after."""
    with ModelServer() as model_server:
        yield model_server
