"""A private `CLAUDE_CONFIG_DIR` for every Claude Code run, and its session kept for resuming.

Claude Code keeps its state (`.claude.json`), transcripts (`projects/<cwd>/<session>.jsonl`),
shell snapshots and backups in its config directory; parallel runs sharing one would write
over each other. Each run gets its own under the state directory, seeded with the host's
settings, instructions and login. When it ends, the run's transcript (what `--resume` needs)
is kept with the execution, secrets masked, and the directory is removed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from loguru import logger

# The host's settings, global instructions and (Linux) login a run takes along.
SEEDED_FILES = ("settings.json", "CLAUDE.md", ".credentials.json")


# What authenticates a headless run: an API key, a long-lived OAuth token from
# `claude setup-token`, or a gateway's bearer token; else a login's .credentials.json.
KEY_VARIABLES = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN")
MISSING_CREDENTIAL = (
    "no Claude Code credential is visible to fleetd: set ANTHROPIC_API_KEY, "
    "CLAUDE_CODE_OAUTH_TOKEN (made by `claude setup-token`) or ANTHROPIC_AUTH_TOKEN (a "
    "gateway's) in fleetd's environment and keep it in worker.env_allow, or sign in with "
    "`claude` so that $CLAUDE_CONFIG_DIR/.credentials.json (default ~/.claude) exists"
)


def find_credential(env: Mapping[str, str], allowed: Iterable[str]) -> str | None:
    """Where a Claude Code run would find its credential (a variable or a login), or None."""
    allowed = set(allowed)
    for name in KEY_VARIABLES:
        if env.get(name) and name in allowed:
            return f"${name}"
    login = host_claude_dir(env) / ".credentials.json"
    return str(login) if login.is_file() else None


def host_claude_dir(env: Mapping[str, str]) -> Path:
    """The host's Claude config directory: `$CLAUDE_CONFIG_DIR`, else `~/.claude`."""
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"])
    return Path(env.get("HOME") or Path.home()) / ".claude"


def project_dir_name(cwd: Path) -> str:
    """Where Claude Code files a directory's transcripts: every other character becomes `-`."""
    return re.sub(r"[^A-Za-z0-9]", "-", str(cwd))


class ClaudeHomes:
    """Creates, harvests and removes the per-execution Claude config directories."""

    def __init__(
        self, root: Path, sessions_dir: Path, host_dir: Path, mask: Callable[[bytes], bytes]
    ) -> None:
        self.root = root
        self.sessions_dir = sessions_dir
        self.host_dir = host_dir
        self.mask = mask

    def home(self, execution: int) -> Path:
        return self.root / str(execution)

    def create(self, execution: int, cwd: Path, resume_session: str | None = None) -> Path:
        """A fresh config directory with the host's settings (and a transcript to resume)."""
        home = self.home(execution)
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(mode=0o700, parents=True)
        for name in SEEDED_FILES:
            if (self.host_dir / name).is_file():
                _copy_private(self.host_dir / name, home / name)
        if resume_session:
            source = Path(resume_session)
            target = home / "projects" / project_dir_name(cwd) / source.name
            target.parent.mkdir(mode=0o700, parents=True)
            _copy_private(source, target)
        return home

    def finish(self, execution: int, session_id: str | None) -> str | None:
        """Keep the run's transcript (masked) and remove the directory; the kept path or None."""
        home = self.home(execution)
        try:
            found = sorted(home.glob(f"projects/*/{session_id}.jsonl")) if session_id else []
            if not found:
                return None
            target = self.sessions_dir / str(execution) / found[-1].name
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_private(target, self.mask(found[-1].read_bytes()))
            return str(target)
        except OSError as exc:
            logger.warning("execution {}: could not keep Claude session: {}", execution, exc)
            return None
        finally:
            shutil.rmtree(home, ignore_errors=True)


def _copy_private(source: Path, target: Path) -> None:
    _write_private(target, source.read_bytes())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
