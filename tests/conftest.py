"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.fleet import Fleet, running_fleet
from tests.support.model_server import ModelServer

# Every fleetd a test starts, through the harness or not, runs without its dashboard unless
# the test asks for one (tests/web/ do, each on a free port): a shared default port would
# make a test's processes depend on which other fleet took it first.
os.environ.setdefault("FLEET_WEB_LISTEN", "off")


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


# The PostgreSQL fixtures (`pg_cluster`, `pg_url`): a cluster started at first use only.
pytest_plugins = ["tests.support.postgres"]
