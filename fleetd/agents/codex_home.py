"""Codex credentials and a private `CODEX_HOME` for every Codex run.

Codex writes state databases, session files and logs into `CODEX_HOME`, and a ChatGPT
login's refresh token is single-use (openai/codex issues 10332 and 17340): parallel runs
sharing one home trip over each other. So each run gets its own home under the state
directory, seeded with the host's `config.toml`, `AGENTS.md` and `auth.json`. When the run
ends, its session file (what `codex exec resume` needs) is kept with the execution, secrets
masked, and a token the run refreshed is written back to the host's `auth.json`, if the host's
file still holds what the run started from.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from loguru import logger

from fleetd.runtime.locks import FileLock

AUTH_FILE = "auth.json"
CONFIG_FILE = "config.toml"
# The host's settings a run takes along: its config (providers, MCP servers, profiles) and its
# global instructions.
SEEDED_FILES = (CONFIG_FILE, "AGENTS.md", "AGENTS.override.md")
KEY_VARIABLES = ("CODEX_API_KEY", "OPENAI_API_KEY")
MISSING_CREDENTIAL = (
    "no Codex credential is visible to fleetd: set OPENAI_API_KEY or CODEX_API_KEY in "
    "fleetd's environment (and keep it in worker.env_allow), or sign in with `codex login` "
    "so that $CODEX_HOME/auth.json (default ~/.codex/auth.json) exists; command tasks run "
    "without one"
)


def host_codex_home(env: Mapping[str, str]) -> Path:
    """The host's Codex home: `$CODEX_HOME`, else `~/.codex`."""
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"])
    return Path(env.get("HOME") or Path.home()) / ".codex"


def find_credential(
    env: Mapping[str, str], allowed: Iterable[str], extra_key: str | None = None
) -> str | None:
    """Where a Codex run would find its credential (a variable or auth.json), or None."""
    allowed = set(allowed)
    for name in (*KEY_VARIABLES, *([extra_key] if extra_key else [])):
        if env.get(name) and name in allowed:
            return f"${name}"
    auth = host_codex_home(env) / AUTH_FILE
    return str(auth) if auth.is_file() else None


class PrivateHomes:
    """Creates, harvests and removes the per-execution Codex homes."""

    def __init__(
        self,
        root: Path,
        sessions_dir: Path,
        host_home: Path,
        mask: Callable[[bytes], bytes],
    ) -> None:
        self.root = root
        self.sessions_dir = sessions_dir
        self.host_home = host_home
        self.mask = mask
        self.seeded_auth: dict[int, bytes] = {}

    def home(self, execution: int) -> Path:
        return self.root / str(execution)

    def create(self, execution: int, resume_session: str | None = None) -> Path:
        """A fresh home with the host's config and credential (and a session to resume)."""
        home = self.home(execution)
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(mode=0o700, parents=True)
        for name in SEEDED_FILES:
            if (self.host_home / name).is_file():
                shutil.copyfile(self.host_home / name, home / name)
        auth = _read(self.host_home / AUTH_FILE)
        if auth is not None:
            _write_private(home / AUTH_FILE, auth)
            self.seeded_auth[execution] = auth
        if resume_session:
            source = Path(resume_session)
            target = home / "sessions" / source.name
            target.parent.mkdir(mode=0o700)
            shutil.copyfile(source, target)
        return home

    def finish(self, execution: int, thread_id: str | None) -> str | None:
        """Keep the run's session file (masked), pass back a refreshed token, remove the home.

        Returns the kept session file's path, or None if the run left none.
        """
        home = self.home(execution)
        kept = None
        try:
            session = _session_file(home, thread_id)
            if session is not None:
                kept = self._keep_session(execution, session)
            self._write_back_auth(execution, home)
        except OSError as exc:
            logger.warning("execution {}: could not keep Codex session: {}", execution, exc)
        finally:
            self.seeded_auth.pop(execution, None)
            shutil.rmtree(home, ignore_errors=True)
        return kept

    def _keep_session(self, execution: int, session: Path) -> str:
        target = self.sessions_dir / str(execution) / session.name
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The key patterns never span a newline, so the file is masked whole, like a patch.
        _write_private(target, self.mask(session.read_bytes()))
        return str(target)

    def _write_back_auth(self, execution: int, home: Path) -> None:
        """A token refreshed by the run replaces the host's, unless the host's changed too."""
        seeded = self.seeded_auth.get(execution)
        current = _read(home / AUTH_FILE)
        if seeded is None or current is None or current == seeded:
            return
        host_auth = self.host_home / AUTH_FILE
        with FileLock(self.root / ".auth.lock"):
            if _read(host_auth) != seeded:
                return  # another run refreshed first; its token stands
            try:
                temp = host_auth.with_name(f".{AUTH_FILE}.{os.getpid()}")
                _write_private(temp, current)
                temp.replace(host_auth)
            except OSError as exc:
                logger.warning(
                    "Codex refreshed its login token but {} is not writable ({}); "
                    "parallel runs may fail with 'refresh token was already used': "
                    "use an API key for fleets",
                    host_auth,
                    exc.strerror,
                )

    @staticmethod
    def remove_all_under(root: Path) -> None:
        """Remove every home (at start: they belong to runs of a fleetd that died)."""
        for home in root.iterdir() if root.is_dir() else []:
            if home.is_dir():
                shutil.rmtree(home, ignore_errors=True)


def _session_file(home: Path, thread_id: str | None) -> Path | None:
    """The run's rollout file: the one named for its thread, else the newest."""
    found = sorted(home.glob("sessions/**/rollout-*.jsonl"), key=lambda p: p.stat().st_mtime)
    if thread_id:
        named = [p for p in found if thread_id in p.name]
        if named:
            return named[-1]
    return found[-1] if found else None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
