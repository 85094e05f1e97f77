"""One fleetd's generation of processes (fork server, broker, recorder, workers), recorded so
that a new fleetd never runs beside what is left of a dead one.

Every child holds the state directory's generation lock (shared) for its life, so the kernel
tells a new supervisor whether any child of an earlier one still runs. Those children end by
themselves when their supervisor dies (`fleetd.runtime.lifecycle.run_as_child`); the new one
waits a bounded time for that, then kills whatever is still the process recorded (pid and
start time, never a process that merely reused a pid), and refuses to start past a second
bound rather than run two brokers on one queue.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from loguru import logger

from fleetd.runtime.locks import FileLock
from fleetd.runtime.processes import start_time, still_running
from shared.errors import StateDirError
from shared.paths import StatePaths

ORPHANS_END_SECONDS = 12.0  # a little more than an orphan's own bound (ORPHAN_GRACE_SECONDS)
KILLED_END_SECONDS = 5.0
POLL_SECONDS = 0.05


class Generation:
    """Records this fleetd's processes; ends the leftovers of an earlier one."""

    def __init__(
        self,
        paths: StatePaths,
        orphans_end: float = ORPHANS_END_SECONDS,
        killed_end: float = KILLED_END_SECONDS,
    ) -> None:
        self.lock_path = paths.generation_lock
        self.file = paths.generation_file
        self.orphans_end = orphans_end
        self.killed_end = killed_end

    def record(self, pids: dict[str, int]) -> None:
        """Replace the record with these processes (by role), each with its start time."""
        lines = []
        for role, pid in pids.items():
            started = start_time(pid)
            if started is not None:
                lines.append(f"{pid} {started} {role}\n")
        temp = self.file.with_suffix(".new")
        temp.write_text("".join(lines))
        os.replace(temp, self.file)

    def recorded(self) -> list[tuple[int, int, str]]:
        """(pid, start time, role) of each process recorded by the last fleetd."""
        found = []
        with contextlib.suppress(OSError):
            for line in self.file.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    pid, started, role = line.split(" ", 2)
                    found.append((int(pid), int(started), role))
        return found

    def end_leftovers(self) -> None:
        """Before anything starts: make sure no process of an earlier fleetd still runs."""
        lock = FileLock(self.lock_path)
        try:
            if self._gone(lock, 0.0):
                return
            left = [f"{role} (pid {pid})" for pid, _, role in self._running()] or ["unrecorded"]
            logger.warning(
                "processes of an earlier fleetd are still running: {}; waiting up to {:g} s "
                "for them to end",
                ", ".join(left),
                self.orphans_end,
            )
            if self._gone(lock, self.orphans_end):
                return
            for pid, _, role in self._running():
                logger.warning("killing {} (pid {}) of an earlier fleetd", role, pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not self._gone(lock, self.killed_end):
                raise StateDirError(
                    f"processes of an earlier fleetd still hold {self.lock_path} and are not "
                    "in its record; end them (`fuser -v` names them), then start fleetd again"
                )
        finally:
            lock.release()

    def _running(self) -> list[tuple[int, int, str]]:
        return [entry for entry in self.recorded() if still_running(entry[0], entry[1])]

    def _gone(self, lock: FileLock, timeout: float) -> bool:
        """Whether, within `timeout`, no recorded process runs and nobody holds the lock."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._running() and lock.acquire(wait=False):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
