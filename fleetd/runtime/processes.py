"""Facts about processes, and ending process groups: the one place fleetd reads `/proc`.

Two reads of `/proc`, each one file: a process's start time and state (`/proc/<pid>/stat`)
and a process's children (`/proc/<pid>/task/*/children`). Everything else is a system call
(waitid, getsid, killpg). psutil does both reads, but measured here it costs what fleetd
cannot spend on every task: `Process(pid).create_time()` reads the stat file and `/proc/stat`
(for the boot time) on each call, 49 us against 17 us for one read, and was 14% of a worker's
CPU in the throughput benchmark; `Process.children()` reads every process's stat file
(1.4 ms with 75 processes, against 41 us), which the supervisor asks for every second; and its
import adds 0.8 MB to every fleetd process. The tests and benchmarks use psutil.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc's unit of time (100 on Linux)


def _stat_fields(pid: int) -> list[bytes] | None:
    """`/proc/<pid>/stat` from field 3 (the state) on, or None if the process is gone."""
    # os.open + os.read, not Path.read_bytes: 40 against 123 us of CPU right after a spawn
    # (the worker reads it for every agent it starts).
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: fields resume after the last
    # ')', with field 3 (the state) first.
    return stat[stat.rindex(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (`/proc/<pid>/stat` field 22), or
    None if it is gone. The same process always gives the same value; a pid reused by
    another process gives another."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def boottime_ticks(ns: int) -> int:
    """CLOCK_BOOTTIME nanoseconds in the clock ticks of a start time (field 22): the kernel
    stamps a process with that clock when it is made and divides it the same way."""
    return ns * CLOCK_TICKS // 1_000_000_000


def still_running(pid: int, started: int) -> bool:
    """Whether the process that started at `started` (ticks) still runs: not gone, not a
    zombie, and its pid not reused by another process since."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in (b"Z", b"X") and int(fields[19]) == started


def direct_children(pid: int | None = None) -> list[int]:
    """Pids whose parent is `pid` (default: this process)."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid or os.getpid()}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(p) for p in (task / "children").read_text().split())
    return found


def has_exited(pid: int) -> bool:
    """Whether a child of ours has ended, without reaping it: its pid stays taken (and so its
    process group's id) until it is waited for."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere: it has ended either way
        return True


def session_of(pid: int) -> int | None:
    """The session id of a process, or None if it is gone."""
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a whole process group; False if the group is gone (or not ours)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def end_children(sig: int = signal.SIGKILL) -> None:
    """Send `sig` to each of our direct children, and to the whole group of any that leads a
    session of its own (an agent): what a worker does when nobody supervises it any more."""
    own_session = os.getsid(0)
    for pid in direct_children():
        if session_of(pid) not in (None, own_session):
            signal_group(pid, sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
