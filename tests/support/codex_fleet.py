"""A real fleetd whose Codex runs talk to the tests' loopback `ModelServer`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tests.support.codex_env import API_KEY_ENV, codex_binary, make_codex_home
from tests.support.fleet import Fleet
from tests.support.model_server import ModelServer

API_KEY = "sk-test-fleet-e2e-0123456789"
MODEL = "gpt-4.1"
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


def fleet_env(tmp_path: Path, server: ModelServer, codex_bin: Path | None = None) -> dict[str, str]:
    """The fleetd environment: the host's, plus codex pointed at `server`."""
    home = make_codex_home(tmp_path / "fleet-codex-home", server.base_url)
    return {
        **os.environ,
        "CODEX_HOME": str(home),
        API_KEY_ENV: API_KEY,
        "FLEET_CODEX_BIN": str(codex_bin or codex_binary()),
    }


def workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def enqueue_codex(fleet: Fleet, prompt: str, cwd: Path | None = None, *more: str) -> int:
    """Enqueue a codex task in `cwd` (or with `more` flags such as `--repo`)."""
    where = ["--cwd", str(cwd)] if cwd is not None else []
    return fleet.enqueue(prompt, "--agent", "codex", "--model", MODEL, *where, *more)


def files_containing(root: Path, needle: bytes) -> list[str]:
    """Files under `root` whose bytes contain `needle` (files gone meanwhile are skipped)."""
    found = []
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and needle in path.read_bytes():
                found.append(str(path))
    return found
