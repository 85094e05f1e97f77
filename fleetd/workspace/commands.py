"""Commands run for workspaces (git, hooks): each the leader of its own process group, with a
timeout and an abort.

Everything here blocks; the worker calls it from a helper thread. `GroupRunner.abort()` is the
one thread-safe entry: it makes the command in progress end (TERM, grace, KILL of its group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fleetd.runtime.processes import has_exited, signal_group
from fleetd.workspace.errors import WorkspaceAborted, WorkspaceError

KILL_GRACE = 2.0  # after TERM, how long a command's group leader has before the group is KILLed
STDERR_KEPT = 8000  # bytes of a command's stderr kept for error messages


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
        """Run `argv` to its end, the timeout or an abort; stdin is /dev/null. Whatever the
        command leaves running in its group when it ends is killed.

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
            try:
                timed_out, aborted = self._wait(proc, start + timeout)
            except BaseException:  # never leave the group running behind an error
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
            stdout = b"" if stdout_file is not None else _read(out, tail)
            stderr = b"" if merge else _read(err, STDERR_KEPT)
        code = None if (timed_out or aborted) else proc.returncode
        return Completed(code, timed_out, aborted, stdout, stderr, time.monotonic() - start)

    def _wait(self, proc: subprocess.Popen[bytes], deadline: float) -> tuple[bool, bool]:
        """(timed out, aborted). Leftovers of the group are killed before the leader is reaped,
        while its pid (the group id) cannot have been reused."""
        timed_out = aborted = False
        delay = 0.001
        while not has_exited(proc.pid):
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


def _end_group(pgid: int) -> None:
    """TERM the whole group, give the leader a grace period, then KILL the group."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    while not has_exited(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    signal_group(pgid, signal.SIGKILL)


def _read(handle: IO[bytes], tail: int | None) -> bytes:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(size - tail, 0) if tail is not None else 0)
    return handle.read()
