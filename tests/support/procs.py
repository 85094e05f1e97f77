"""Process facts the tests and benchmarks read: the one place they look.

Through psutil and fleetd's own `fleetd.runtime.processes`, never by parsing
`/proc/<pid>/stat`: psutil knows a zombie from a live process, and a command name with
spaces or parentheses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psutil

from fleetd.runtime import processes

# A process's direct children, read as fleetd's supervisor reads them.
children = processes.direct_children


def is_alive(pid: int) -> bool:
    """Running, and not a zombie (exited, not yet reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_and_wait(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL a process the test started (not a child of ours: a stray it made) and wait
    until it is gone or a zombie: a kill's delivery is not its end, and a check for leftovers
    right after it saw the process still running."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def title(pid: int) -> str | None:
    """A process's title (`fleetd: worker 3`): the first word of its command line."""
    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None
    return cmdline[0] if cmdline else None


def command_line(pid: int) -> str:
    """A process's command line, its words joined by spaces ('' if it is gone)."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ""


def session_members(sid: int) -> list[int]:
    """Pids of processes in session `sid` (fleetd runs as a session leader in tests)."""
    found = []
    for pid in psutil.pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getsid(pid) == sid:
                found.append(pid)
    return found


def processes_under(directory: Path) -> list[int]:
    """Live processes whose cwd or command line mentions `directory` (agents, workers)."""
    marker = str(directory)
    return [
        proc.pid
        for proc in _live_except_us()
        if marker in " ".join(proc.info["cmdline"] or ())
        or (proc.info["cwd"] or "").startswith(marker)
    ]


def processes_naming(marker: str) -> list[int]:
    """Live processes whose command line contains `marker`."""
    return [
        proc.pid for proc in _live_except_us() if marker in " ".join(proc.info["cmdline"] or ())
    ]


def _live_except_us() -> list[psutil.Process]:
    me = os.getpid()
    return [
        proc
        for proc in psutil.process_iter(["cmdline", "cwd", "status"])
        if proc.pid != me and proc.info["status"] != psutil.STATUS_ZOMBIE
    ]


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of a process so far (0.0 if it is gone); with `children`,
    that of its waited-for children instead (a worker's agents)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.children_user + times.children_system if children else times.user + times.system
