"""Starting an agent as the leader of its own session and process group, by `posix_spawn`.

`subprocess.Popen` with a `cwd`, `start_new_session` and `close_fds` (what an agent needs)
takes CPython's `_posixsubprocess` path: 400-450 us of the worker's CPU per agent measured
here, against 200-230 us for `os.posix_spawn` (glibc's clone(CLONE_VFORK), no Python in the
child). What Popen did in the child is done here without it:
- the working directory: posix_spawn has no chdir in Python 3.11, so the worker changes its
  own directory around the call (it runs one agent at a time, and its helper thread is idle
  while it starts one: it prepares before and commits after);
- closing fds: every fd a worker opens is non-inheritable (Python's default, and libzmq's);
  the ones it inherited are made so once, before its first agent;
- signals: SIGPIPE and SIGXFSZ, which Python ignores, are reset to their defaults (as
  Popen's `restore_signals` does); caught signals reset themselves at exec.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from io import FileIO

from fleetd.agents.base import AgentCommand

PIPE_CAPACITY = 65536
# Reset to their default for the agent: what Popen resets (SIGPIPE, SIGXFSZ), and SIGINT and
# SIGQUIT, which a worker ignores (SIGINT) or inherits ignored from a shell that started fleetd
# in the background; an agent and its tools need them for their own interrupts. The signal
# mask is set empty too: nothing blocked in the worker stays blocked in the agent.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGQUIT)


@dataclass
class AgentProcess:
    """The parts of a Popen the worker uses: the pid, both output pipes, the exit status."""

    pid: int
    stdout: FileIO
    stderr: FileIO
    returncode: int | None = None
    stdin: int = -1  # the write end of its stdin, non-blocking, when fleetd speaks to it
    spawned: tuple[int, int] = (0, 0)  # CLOCK_BOOTTIME ns before and after: its start time

    def poll(self) -> int | None:
        """The exit code (negative: the signal that ended it) once the leader exited."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere; its status is gone
                self.returncode = 255
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


class _Inherited:
    """Whether the fds this process inherited were made non-inheritable yet."""

    swept = False


def spawn(command: AgentCommand) -> AgentProcess:
    """Start the agent as the leader of a new session and process group, its output piped."""
    program = _program(command.argv[0] if command.argv else "", command.env)
    _sweep_inherited_fds()
    speak = -1
    if command.conversation is not None:
        stdin, speak = os.pipe()
        os.set_blocking(speak, False)
    else:
        stdin = _stdin_for(command.stdin)
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(command.cwd)
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        try:
            pid = os.posix_spawn(
                program,
                command.argv,
                command.env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, stdin, 0),
                    (os.POSIX_SPAWN_DUP2, out_write, 1),
                    (os.POSIX_SPAWN_DUP2, err_write, 2),
                ],
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
                setsigmask=(),
            )
        finally:
            after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            os.fchdir(here)
    except BaseException:
        for fd in (out_read, err_read, speak):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (here, stdin, out_write, err_write):
            os.close(fd)
    out, err = FileIO(out_read, "rb"), FileIO(err_read, "rb")
    return AgentProcess(pid, out, err, stdin=speak, spawned=(before, after))


def _program(name: str, env: dict[str, str]) -> str:
    """The file to execute: a name with a slash as it is, else found on the agent's PATH."""
    if not name or "\0" in name:
        raise ValueError("embedded null byte" if name else "empty command")
    if "/" in name:
        return name
    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    return found


def _sweep_inherited_fds() -> None:
    """Make every fd above stderr non-inheritable, once: posix_spawn closes none itself."""
    if _Inherited.swept:
        return
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own fd, closed since
                os.set_inheritable(fd, False)
    _Inherited.swept = True


def _stdin_for(data: bytes | None) -> int:
    """An fd to read `data` from: a pipe when it fits the pipe buffer, else an unlinked file."""
    if data is None:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    if len(data) <= PIPE_CAPACITY:
        read_end, write_end = os.pipe()
        os.write(write_end, data)
        os.close(write_end)
        return read_end
    with tempfile.TemporaryFile() as handle:
        handle.write(data)
        handle.flush()
        fd = os.dup(handle.fileno())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
