"""Git plumbing for workspaces: commands in their own process group, a clean git, repo locks.

Everything here blocks; the worker calls it from a helper thread. `GroupRunner.abort()` is the
one thread-safe entry: it makes the command in progress end (TERM, grace, KILL of its group).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fleetd.agentproc import signal_group
from shared.errors import FleetError
from shared.models import FileChange

GIT_TIMEOUT = 300.0  # local git commands (add, commit, worktree add on a big checkout)
NETWORK_TIMEOUT = 1800.0  # clone and fetch
LOCK_TIMEOUT = NETWORK_TIMEOUT + 60.0  # another worker may be cloning the same repository
KILL_GRACE = 2.0
STDERR_TAIL = 2000

# Applied to every git command: nothing from a repository's or the host's configuration may run
# a program (hooks, fsmonitor), sign, open a pager, start background maintenance or use a
# transport other than the accepted URL forms (`ext::` runs commands).
GIT_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "commit.gpgSign=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "color.ui=false",
    "core.pager=cat",
    "protocol.allow=never",
    "protocol.file.allow=always",
    "protocol.https.allow=always",
    "protocol.ssh.allow=always",
)
# Host variables git may need to reach a remote (keys, certificates, proxies); nothing else.
GIT_PASS_ENV = (
    "PATH",
    "HOME",
    "TMPDIR",
    "SSH_AUTH_SOCK",
    "GIT_SSH_COMMAND",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
)

URL_RE = re.compile(r"^(https|ssh|file)://[^\s]+$")
SCP_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")  # git@host:owner/repo.git
SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class WorkspaceError(FleetError):
    """A workspace cannot be made, committed or removed; the text says why and what to do.

    `hooks` holds the hook runs made before the failure, so their output can still be recorded.
    """

    def __init__(self, message: str, hooks: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.hooks = list(hooks)


class WorkspaceAborted(WorkspaceError):
    """`abort()` ended the step in progress (the task was cancelled or the fleet is stopping)."""


@dataclass(frozen=True)
class Completed:
    """How one command ended. `returncode` is None when we ended it (timeout or abort)."""

    returncode: int | None
    timed_out: bool
    aborted: bool
    stdout: bytes
    stderr: bytes
    duration_s: float


class GroupRunner:
    """Runs commands, each as the leader of its own session; `abort()` ends the one running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._aborted = False

    def begin(self) -> None:
        """Start a new operation: an abort of an earlier one no longer applies."""
        with self._lock:
            self._aborted = False

    def abort(self) -> None:
        """Thread-safe: end the command in progress and refuse the rest of this operation."""
        with self._lock:
            self._aborted = True

    @property
    def aborted(self) -> bool:
        with self._lock:
            return self._aborted

    def check(self) -> None:
        if self.aborted:
            raise WorkspaceAborted(
                "workspace step aborted: the task was cancelled or fleetd is stopping"
            )

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        timeout: float,
        stdout_file: Path | None = None,
        merge: bool = False,
        tail: int | None = None,
    ) -> Completed:
        """Run `argv` to its end, the timeout or an abort; stdin is /dev/null.

        Output goes to files, not pipes, so that a background child holding them open never
        keeps us waiting. `merge` interleaves stderr into stdout; `tail` keeps only the last
        bytes of stdout; `stdout_file` sends stdout to that file instead.
        """
        self.check()
        start = time.monotonic()
        with contextlib.ExitStack() as stack:
            out: IO[bytes] = (
                stack.enter_context(stdout_file.open("wb"))
                if stdout_file is not None
                else stack.enter_context(tempfile.TemporaryFile())
            )
            err = out if merge else stack.enter_context(tempfile.TemporaryFile())
            proc = _spawn(argv, cwd, env, out, err)
            timed_out, aborted = self._wait(proc, start + timeout)
            stdout = b"" if stdout_file is not None else _read(out, tail)
            stderr = b"" if merge else _read(err, STDERR_TAIL * 4)
        code = None if (timed_out or aborted) else proc.returncode
        return Completed(code, timed_out, aborted, stdout, stderr, time.monotonic() - start)

    def _wait(self, proc: subprocess.Popen[bytes], deadline: float) -> tuple[bool, bool]:
        """(timed out, aborted). Leftovers of the group are killed before the leader is reaped,
        while its pid (the group id) cannot have been reused."""
        timed_out = aborted = False
        delay = 0.001
        while not _exited(proc.pid):
            if self.aborted or time.monotonic() >= deadline:
                aborted = self.aborted
                timed_out = not aborted
                _end_group(proc.pid)
                break
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
            delay = min(delay * 2, 0.05)
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        return timed_out, aborted


def _spawn(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], out: IO[bytes], err: IO[bytes]
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            close_fds=True,
        )
    except FileNotFoundError as exc:
        missing = cwd if not cwd.is_dir() else argv[0]
        raise WorkspaceError(f"cannot run {argv[0]}: {missing} not found") from exc
    except OSError as exc:
        raise WorkspaceError(f"cannot run {argv[0]} in {cwd}: {exc.strerror or exc}") from exc


def _exited(pid: int) -> bool:
    """Whether the process has ended, without reaping it (its pid stays its group's id)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere: it has ended either way
        return True


def _end_group(pgid: int) -> None:
    """TERM the whole group, give the leader a grace period, then KILL the group."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    while not _exited(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    signal_group(pgid, signal.SIGKILL)


def _read(handle: IO[bytes], tail: int | None) -> bytes:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(size - tail, 0) if tail is not None else 0)
    return handle.read()


def git_env(env: Mapping[str, str], name: str, email: str) -> dict[str, str]:
    """The environment of every git command: explicit, never prompting, never a pager."""
    clean = {key: env[key] for key in GIT_PASS_ENV if key in env}
    clean.setdefault("PATH", os.defpath)
    clean.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    clean.update(
        LC_ALL="C",
        LANG="C",
        GIT_TERMINAL_PROMPT="0",
        GIT_PAGER="cat",
        PAGER="cat",
        GIT_AUTHOR_NAME=name,
        GIT_AUTHOR_EMAIL=email,
        GIT_COMMITTER_NAME=name,
        GIT_COMMITTER_EMAIL=email,
    )
    return clean


class Git:
    """git's CLI with the fixed configuration and environment above, through a GroupRunner."""

    def __init__(self, runner: GroupRunner, env: Mapping[str, str]) -> None:
        self.runner = runner
        self.env = dict(env)

    def run(
        self,
        cwd: Path,
        *args: str,
        check: bool = True,
        timeout: float = GIT_TIMEOUT,
        stdout_file: Path | None = None,
    ) -> Completed:
        """Run `git ARGS` in `cwd`; a failure (when checked) raises WorkspaceError with stderr."""
        argv = ["git"]
        for item in GIT_CONFIG:
            argv += ["-c", item]
        done = self.runner.run(
            [*argv, *args], cwd=cwd, env=self.env, timeout=timeout, stdout_file=stdout_file
        )
        if done.aborted:
            raise WorkspaceAborted(
                f"`git {args[0]}` aborted: the task was cancelled or fleetd is stopping"
            )
        if done.timed_out:
            raise WorkspaceError(
                f"`git {args[0]}` in {cwd} took over {timeout:.0f} s and was stopped"
            )
        if check and done.returncode != 0:
            raise WorkspaceError(
                f"`git {_shown(args)}` failed in {cwd} (exit {done.returncode}): "
                + stderr_tail(done)
            )
        return done

    def text(self, cwd: Path, *args: str) -> str:
        """stdout of a checked git command, stripped."""
        return self.run(cwd, *args).stdout.decode("utf-8", "replace").strip()

    def ok(self, cwd: Path, *args: str) -> bool:
        return self.run(cwd, *args, check=False).returncode == 0

    def commit_of(self, cwd: Path, rev: str) -> str | None:
        """The commit `rev` names in the repository at `cwd`, or None."""
        done = self.run(
            cwd,
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            rev + "^{commit}",
            check=False,
        )
        if done.returncode != 0:
            return None
        return done.stdout.decode().strip() or None


def _shown(args: Sequence[str]) -> str:
    text = " ".join(args)
    return text if len(text) <= 200 else text[:200] + "…"


def stderr_tail(done: Completed) -> str:
    text = done.stderr.decode("utf-8", "replace").strip()
    if len(text) > STDERR_TAIL:
        text = "…" + text[-STDERR_TAIL:]
    return text or "(no output)"


def check_ref(ref: str) -> str:
    """A REF given by a user, refused when it could be read as an option or is malformed."""
    if not ref or ref.startswith("-") or any(ch.isspace() or ch < " " for ch in ref):
        raise WorkspaceError(
            f"invalid --ref {ref!r}: give a branch, tag or commit (not starting with '-', "
            "without spaces or control characters)"
        )
    return ref


def is_url(repo: str) -> bool:
    """Whether `repo` is a URL to clone (True) or a local path (False); refuse anything else."""
    if not repo or repo.startswith("-") or any(ch < " " for ch in repo):
        raise WorkspaceError(f"invalid --repo {repo!r}: give a local path or a git URL")
    if URL_RE.match(repo) or SCP_RE.match(repo):
        return True
    if SCHEME_RE.match(repo):
        raise WorkspaceError(
            f"unsupported repository URL {repo!r}: use https://, ssh://, git@host:path, "
            "file:// or a local path"
        )
    return False


def clone_name(url: str) -> str:
    """A directory name for the clone of `url`: readable, and unique by a hash of the URL."""
    last = re.split(r"[/:]", url.rstrip("/"))[-1].removesuffix(".git")
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", last).lstrip(".")[:40] or "repo"
    return f"{readable}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def parse_numstat(data: bytes) -> list[FileChange]:
    """Files of `git diff --numstat -z`; binary files ("-") count None lines."""
    parts = data.split(b"\0")
    files = []
    i = 0
    while i < len(parts) and parts[i]:
        added, removed, path = parts[i].split(b"\t", 2)
        i += 1
        if not path:  # a rename: the old and new paths follow as their own fields
            path = parts[i + 1]
            i += 2
        files.append(
            FileChange(
                path=path.decode("utf-8", "backslashreplace"),
                insertions=None if added == b"-" else int(added),
                deletions=None if removed == b"-" else int(removed),
            )
        )
    return files


@contextlib.contextmanager
def repo_lock(path: Path, runner: GroupRunner, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive flock on `path`: workers in other processes may use the same repo.

    git's own lock files make a concurrent `git worktree add` fail rather than wait.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                runner.check()
                if time.monotonic() >= deadline:
                    raise WorkspaceError(
                        f"another worker held the repository lock {path} for over "
                        f"{timeout:.0f} s; check for a stuck clone or fetch"
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
