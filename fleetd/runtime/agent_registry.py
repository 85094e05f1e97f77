"""The `agents/` directory: one file per running agent, so that a new fleetd ends exactly the
agents a dead one left, and never a process that merely reused a pid.

Each file `agents/<execution>.pid` holds the agent's pid and its start time. Written by the
worker that starts the agent; read by the supervisor at start and when a stop times out.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from fleetd.runtime.processes import signal_group, start_time


class AgentRegistry:
    """Records and forgets running agents; ends the ones a dead fleetd left behind."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _file(self, execution: int) -> Path:
        return self.directory / f"{execution}.pid"

    def record(self, execution: int, pid: int) -> None:
        started = start_time(pid)
        self._file(execution).write_text(f"{pid} {started if started is not None else 0}\n")

    def forget(self, execution: int) -> None:
        self._file(execution).unlink(missing_ok=True)

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
        for path, pid, started in self.leftovers():
            current = start_time(pid)
            if (current is None or current == started) and signal_group(pid, signal.SIGKILL):
                ended += 1
            path.unlink(missing_ok=True)
        return ended
