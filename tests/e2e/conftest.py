"""e2e fixtures: nothing a codex run started may outlive its test."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import processes_under


@pytest.fixture(autouse=True)
def _end_leftovers(tmp_path: Path) -> Iterator[None]:
    """Codex starts a shell-snapshot `bash -lc` in a session of its own, in the run's directory;
    killing codex's process group misses it, so whatever still runs under tmp_path is ended."""
    yield
    for pid in processes_under(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=["exec", "app-server"])
def codex_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test that uses it runs twice: Codex driven by `codex exec --json`, then through
    `codex app-server` (fleetd's environment carries FLEET_CODEX_MODE)."""
    monkeypatch.setenv("FLEET_CODEX_MODE", request.param)
    return request.param
