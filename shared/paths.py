"""Where things live under the state directory, and how that directory is found."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

import msgspec

from shared.errors import StateDirError

APP_NAME = "agent-fleet"
# Linux's sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def default_state_dir(env: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/agent-fleet`, else `~/.local/state/agent-fleet` (XDG base directories)."""
    xdg = env.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / APP_NAME


def default_config_file(env: Mapping[str, str]) -> Path:
    """`$XDG_CONFIG_HOME/agent-fleet/fleet.toml`, else `~/.config/agent-fleet/fleet.toml`."""
    xdg = env.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path(env.get("HOME") or Path.home()) / ".config"
    return base / APP_NAME / "fleet.toml"


class StatePaths(msgspec.Struct, frozen=True):
    """Every file and socket of one fleet, derived from its state directory."""

    # A frozen struct rather than a frozen dataclass: the same equality, hash and repr, and
    # `dataclasses` (with `inspect`, which it imports) stays out of every fleetctl command.

    root: Path

    @property
    def control_socket(self) -> Path:
        return self.root / "fleetd.sock"

    @property
    def lock_file(self) -> Path:
        return self.root / "fleetd.lock"

    @property
    def generation_lock(self) -> Path:
        """Held (shared) by every child of the running fleetd, however its supervisor ended."""
        return self.root / "generation.lock"

    @property
    def generation_file(self) -> Path:
        """The running fleetd's helpers and children, each a pid and its start time."""
        return self.root / "generation.pids"

    @property
    def run_dir(self) -> Path:
        """Internal sockets between fleetd's own processes."""
        return self.root / "run"

    @property
    def queue_db(self) -> Path:
        return self.root / "queue.db"

    @property
    def events_db(self) -> Path:
        return self.root / "events.db"

    @property
    def spool_dir(self) -> Path:
        """Per-execution event spools: what a worker read, before the recorder stored it."""
        return self.root / "spool"

    @property
    def agents_dir(self) -> Path:
        """Each worker process's running agent (pid and start time), so a new fleetd can end
        leftovers."""
        return self.root / "agents"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def scratch_dir(self) -> Path:
        """Fresh working directories for tasks that name none."""
        return self.root / "scratch"

    @property
    def workspaces_dir(self) -> Path:
        """One git worktree per repository task, named for the task."""
        return self.root / "workspaces"

    @property
    def repos_dir(self) -> Path:
        """Clones of repositories given by URL, shared by their tasks' worktrees."""
        return self.root / "repos"

    @property
    def diffs_dir(self) -> Path:
        return self.root / "diffs"

    @property
    def sessions_dir(self) -> Path:
        """Each Codex run's session file (what `codex exec resume` needs)."""
        return self.root / "sessions"

    @property
    def web_token(self) -> Path:
        """The dashboard's access token (mode 0600), made on the web process's first start."""
        return self.root / "web-token"

    @property
    def codex_homes_dir(self) -> Path:
        """Private CODEX_HOME of each running Codex agent."""
        return self.root / "codex-homes"

    @property
    def claude_homes_dir(self) -> Path:
        """Private CLAUDE_CONFIG_DIR of each running Claude Code agent."""
        return self.root / "claude-homes"

    def workspace(self, task: int) -> Path:
        return self.workspaces_dir / str(task)

    @property
    def task_locks_dir(self) -> Path:
        """One lock file per repository task: held by the run, tried by worktree removal."""
        return self.workspaces_dir / ".locks"

    def task_lock_file(self, task: int) -> Path:
        return self.task_locks_dir / str(task)

    @property
    def broker_endpoint(self) -> str:
        return "ipc://" + str(self.run_dir / "broker.sock")

    @property
    def recorder_endpoint(self) -> str:
        return "ipc://" + str(self.run_dir / "recorder.sock")

    @property
    def feed_endpoint(self) -> str:
        return "ipc://" + str(self.run_dir / "feed.sock")

    def spool_file(self, execution: int) -> Path:
        return self.spool_dir / f"{execution}.spool"

    def stderr_file(self, execution: int) -> Path:
        return self.logs_dir / f"{execution}.stderr"

    def check_socket_paths(self) -> None:
        """Refuse a state directory whose socket paths the kernel cannot bind."""
        longest = max(
            (self.run_dir / "recorder.sock", self.control_socket), key=lambda p: len(str(p))
        )
        try:
            str(self.root).encode()  # ZeroMQ takes endpoints as UTF-8 text
        except UnicodeEncodeError:
            raise StateDirError(
                f"state directory {str(self.root)!r} is not a UTF-8 path; "
                "choose another --state-dir"
            ) from None
        if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
            raise StateDirError(
                f"state directory {self.root} is too deep: socket path {longest} is longer "
                f"than {MAX_SOCKET_PATH} bytes; choose a shorter --state-dir"
            )

    def create(self) -> None:
        """Make the directory tree, owner-only (0700), or say why it cannot be made."""
        dirs = (
            self.root,
            self.run_dir,
            self.spool_dir,
            self.agents_dir,
            self.logs_dir,
            self.scratch_dir,
            self.workspaces_dir,
            self.task_locks_dir,
            self.repos_dir,
            self.diffs_dir,
            self.sessions_dir,
            self.codex_homes_dir,
            self.claude_homes_dir,
        )
        self._check_owner_may_write()
        try:
            for directory in dirs:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.root.chmod(0o700)  # group and others lose access; the owner's is whole
            self._tighten(dirs)
            probe = self.root / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StateDirError(
                f"cannot use state directory {self.root}: {exc.strerror or exc}; "
                "pick a writable directory with --state-dir or FLEET_STATE_DIR"
            ) from exc

    def _check_owner_may_write(self) -> None:
        """Refuse an existing state directory its owner made read-only (e.g. 0500), rather
        than give back the write permission someone took away."""
        try:
            mode = stat.S_IMODE(self.root.stat().st_mode)
        except OSError:
            return  # not there yet (or not a directory): `create` names the problem
        if mode & 0o700 != 0o700:
            raise StateDirError(
                f"state directory {self.root} is mode {mode:04o}: fleetd needs to read, write "
                f"and enter it; `chmod u+rwx {self.root}`, or pick another --state-dir"
            )

    def _tighten(self, dirs: tuple[Path, ...]) -> None:
        """Take group and other access from what an older fleetd (umask 022) left: its
        directories, and the files of those that are fleetd's own (databases, whose -wal and
        -shm SQLite makes with the database's mode; agent records, spools, logs, diffs).
        What tasks and clones hold is theirs: left as it is."""
        own_files = (self.root, self.run_dir, self.spool_dir, self.agents_dir, self.logs_dir)
        own_files += (self.diffs_dir, self.sessions_dir, self.task_locks_dir)
        entries = [*dirs, *(path for d in own_files for path in d.iterdir())]
        for path in entries:
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o077:
                path.chmod(mode & 0o700)
