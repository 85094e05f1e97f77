"""Fixtures of the worker's tests: a state directory, an inline helper job, a worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.worker.logic import Worker
from shared.config import FleetConfig, load_config
from tests.support.inline_job import InlineJob


@pytest.fixture
def config(tmp_path: Path) -> FleetConfig:
    env = {"HOME": str(tmp_path), "FLEET_WORKER_GRACE_SECONDS": "1"}
    loaded = load_config(env, None, {"state_dir": str(tmp_path / "state")})
    loaded.paths().create()
    return loaded


@pytest.fixture
def job() -> InlineJob:
    return InlineJob()


@pytest.fixture
def worker(config: FleetConfig, job: InlineJob, tmp_path: Path) -> Iterator[Worker]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    made = Worker(config, "w1", env, job=job, pid=4242)
    yield made
    made.close()
