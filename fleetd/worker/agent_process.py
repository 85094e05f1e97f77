"""Starting an agent in its own process group, ending the whole group, and remembering it.

Each running agent has a file `agents/<execution>.pid` holding its pid and its start time
(`/proc/<pid>/stat` field 22). After a crash of the whole daemon, the next fleetd ends exactly
those process groups, and never a process that merely reused a pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from fleetd.agents.base import AgentCommand

PIPE_CAPACITY = 65536


def process_start_time(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses; fields resume after ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def spawn(command: AgentCommand, stderr_to_pipe: bool = True) -> subprocess.Popen[bytes]:
    """Start the agent as the leader of a new session and process group."""
    stdin = _stdin_for(command.stdin)
    try:
        return subprocess.Popen(
            command.argv,
            cwd=command.cwd,
            env=command.env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stderr_to_pipe else subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            bufsize=0,
        )
    finally:
        if isinstance(stdin, int) and stdin >= 0:
            os.close(stdin)


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


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a whole process group; False if the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


class AgentRegistry:
    """The `agents/` directory: one file per running agent group."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def record(self, execution: int, pid: int) -> None:
        start = process_start_time(pid)
        path = self.directory / f"{execution}.pid"
        path.write_text(f"{pid} {start if start is not None else 0}\n")

    def forget(self, execution: int) -> None:
        (self.directory / f"{execution}.pid").unlink(missing_ok=True)

    def leftovers(self) -> list[tuple[Path, int, int]]:
        """(file, pid, start time) of every agent recorded and not forgotten."""
        found = []
        for path in self.directory.glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid_text, start_text = path.read_text().split()
                found.append((path, int(pid_text), int(start_text)))
        return found

    def end_leftovers(self) -> int:
        """SIGKILL every recorded agent group that is still the one recorded.

        Called by a new supervisor before it starts anything: those agents belong to a fleetd
        that died without ending them. A live process with the recorded pid but another start
        time reused the pid: it is left alone. With no process of that pid, a group of that
        id can only hold the old agent's children (Linux never hands out a pid still in use as
        a group id). Returns how many groups were ended.
        """
        ended = 0
        for path, pid, start in self.leftovers():
            current = process_start_time(pid)
            if (current is None or current == start) and signal_group(pid, signal.SIGKILL):
                ended += 1
            path.unlink(missing_ok=True)
        return ended
