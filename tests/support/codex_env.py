"""Run the real Codex CLI offline against a loopback `ModelServer`.

`make_codex_home` writes this `config.toml` (PORT is the server's port)::

    model_provider = "mock"

    [model_providers.mock]
    name = "mock"
    base_url = "http://127.0.0.1:PORT/v1"
    wire_api = "responses"
    env_key = "CODEX_API_KEY"
    request_max_retries = 0
    stream_max_retries = 0

    [features]
    plugins = false

    [analytics]
    enabled = false

The same settings as `codex exec` flags (what `config_overrides` returns)::

    -c model_provider="mock"
    -c model_providers.mock={name="mock", base_url="http://127.0.0.1:PORT/v1",
       wire_api="responses", env_key="CODEX_API_KEY",
       request_max_retries=0, stream_max_retries=0}
    -c features.plugins=false        (same as --disable plugins)
    -c analytics.enabled=false

`plugins = false` stops a `git` fetch from github.com and `analytics.enabled = false`
stops a metrics export to chatgpt.com; with both, codex 0.169.0 opens exactly one
kind of socket: TCP to the provider's 127.0.0.1 port. The API key is read from the
variable named by `env_key` and sent as `Authorization: Bearer <key>`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_CODEX = (
    REPO_ROOT
    / ".tools/codex/node_modules/@openai/codex-linux-x64"
    / "vendor/x86_64-unknown-linux-musl/bin/codex"
)
PROVIDER = "mock"
API_KEY_ENV = "CODEX_API_KEY"


def codex_binary() -> Path:
    """Return the native codex binary: `$FLEET_CODEX_BIN`, else the project-local install."""
    override = os.environ.get("FLEET_CODEX_BIN")
    return Path(override) if override else PROJECT_CODEX


def provider_table(base_url: str) -> str:
    """Return the mock provider as an inline TOML table."""
    return (
        f'{{name="{PROVIDER}", base_url="{base_url}", wire_api="responses", '
        f'env_key="{API_KEY_ENV}", request_max_retries=0, stream_max_retries=0}}'
    )


def config_toml(base_url: str) -> str:
    """Return the offline `config.toml` text for a provider at `base_url`."""
    return (
        f'model_provider = "{PROVIDER}"\n\n'
        f"[model_providers.{PROVIDER}]\n"
        f'name = "{PROVIDER}"\n'
        f'base_url = "{base_url}"\n'
        'wire_api = "responses"\n'
        f'env_key = "{API_KEY_ENV}"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n\n"
        "[features]\nplugins = false\n\n"
        "[analytics]\nenabled = false\n"
    )


def config_overrides(base_url: str) -> list[str]:
    """Return `-c` flags equivalent to `config_toml(base_url)`."""
    return [
        "-c",
        f'model_provider="{PROVIDER}"',
        "-c",
        f"model_providers.{PROVIDER}={provider_table(base_url)}",
        "-c",
        "features.plugins=false",
        "-c",
        "analytics.enabled=false",
    ]


def make_codex_home(dir: Path, base_url: str) -> Path:
    """Create `dir` as a private CODEX_HOME with the offline config; return it."""
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "config.toml").write_text(config_toml(base_url))
    return dir


def codex_env(home: Path, api_key: str = "sk-test") -> dict[str, str]:
    """Return the process environment for a codex run using `home`."""
    return {**os.environ, "CODEX_HOME": str(home), API_KEY_ENV: api_key}


def codex_argv(prompt: str, cd: Path, model: str = "gpt-4.1") -> list[str]:
    """Return the argv of a `codex exec --json` run in `cd` (stdin must be closed)."""
    return [
        str(codex_binary()),
        "exec",
        "--json",
        "--model",
        model,
        "--sandbox",
        "workspace-write",
        "--skip-git-repo-check",
        "--color",
        "never",
        "--cd",
        str(cd),
        "--",
        prompt,
    ]


@dataclass(frozen=True)
class CodexRun:
    """Outcome of one finished codex process."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    seconds: float

    def types(self) -> list[str]:
        """Return the `type` of every stdout event, in order."""
        return [event.get("type", "") for event in self.events]

    def completed_items(self, item_type: str) -> list[dict[str, Any]]:
        """Return the items of `item.completed` events of one item type."""
        return [
            event["item"]
            for event in self.events
            if event.get("type") == "item.completed" and event["item"].get("type") == item_type
        ]


def parse_events(stdout: str) -> list[dict[str, Any]]:
    """Parse `codex exec --json` stdout (JSON Lines) into events."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process group led by `proc` (if any member is left) and reap `proc`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def spawn_codex(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start codex in its own session with stdin closed and output captured."""
    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_codex(argv: list[str], env: dict[str, str], timeout: float = 30.0) -> CodexRun:
    """Run codex to completion; on timeout or error, kill its whole process group."""
    started = time.monotonic()
    proc = spawn_codex(argv, env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    return CodexRun(proc.returncode, parse_events(stdout), stderr, time.monotonic() - started)
