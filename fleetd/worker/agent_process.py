"""Starting an agent as the leader of its own session and process group."""

from __future__ import annotations

import os
import subprocess
import tempfile

from fleetd.agents.base import AgentCommand

PIPE_CAPACITY = 65536


def spawn(command: AgentCommand) -> subprocess.Popen[bytes]:
    """Start the agent as the leader of a new session and process group, its output piped."""
    stdin = _stdin_for(command.stdin)
    try:
        return subprocess.Popen(
            command.argv,
            cwd=command.cwd,
            env=command.env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
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
