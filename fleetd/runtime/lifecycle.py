"""What every fleetd process does at start: its title, its logging, its signals, and (for
the supervisor's children) how each ends when the supervisor dies without ending it."""

from __future__ import annotations

import contextlib
import ctypes
import enum
import multiprocessing
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import setproctitle
from loguru import logger

from fleetd.runtime.locks import FileLock
from fleetd.runtime.processes import end_children

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
ORPHAN_GRACE_SECONDS = 10.0  # the longest an orphaned child's orderly stop may take


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` when our parent exits, so no child outlives fleetd."""
    _prctl(PR_SET_PDEATHSIG, sig)


def give_back_free_memory() -> None:
    """Return the heap's free pages to the kernel (glibc `malloc_trim`), a few microseconds.

    A storm of control connections makes libzmq allocate buffers on its I/O thread; freed,
    they stay in glibc's arenas as fragments the next storm cannot reuse, and the
    supervisor's RSS climbs storm after storm (35 to 240 MB over 6 rounds of 6,000) unless
    they are given back.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


def become_subreaper() -> None:
    """Orphaned descendants (agents of a dead worker) are re-parented to us, not to init."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def configure_logging(role: str, level: str, json_lines: bool) -> None:
    """Loguru to stderr, each line tagged with the process role.

    Tracebacks are plain: loguru's default `diagnose` prints every local variable's value
    beside each frame, which would put API keys, prompts and environments in the log.
    """
    logger.remove()
    logger.configure(extra={"role": role})
    if json_lines:
        logger.add(sys.stderr, level=level, serialize=True, diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=level,
            format="{time:YYYY-MM-DDTHH:mm:ss.SSS!UTC}Z {level: <7} {extra[role]}: {message}",
            diagnose=False,
        )


def set_title(title: str) -> None:
    """Show `title` in ps and top (`fleetd: broker`, `fleetd: worker 3`)."""
    setproctitle.setproctitle(title)


class ShutdownSignal:
    """SIGTERM (and optionally SIGINT) set a flag and wake the process loop through a socket;
    a SIGHUP, if asked for, is counted apart (`hangups`: the supervisor reloads its config).

    The read end is registered in the loop's poller; the handler does nothing else.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        self.received: int | None = None
        self.count = 0
        self.hangups = 0  # SIGHUPs (when asked for): a reload, never a stop
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.hangups += 1
            return
        self.received = signum
        self.count += 1

    @property
    def fd(self) -> int:
        return self._reader.fileno()

    def drain(self) -> None:
        """Empty the wake-up socket after the poller reported it readable."""
        try:
            while self._reader.recv(512):
                pass
        except BlockingIOError:
            pass


def child_start(role: str, title: str, log_level: str, log_json: bool) -> ShutdownSignal:
    """Common start of a forked child: title, logging, die with the fleet, signals."""
    set_title(title)
    configure_logging(role, log_level, log_json)
    # Ctrl-C in a terminal reaches the whole process group; the supervisor alone decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Our parent is multiprocessing's fork server: this covers its death alone. The
    # supervisor's death is watched by `run_as_child`.
    die_with_parent(signal.SIGTERM)
    return ShutdownSignal((signal.SIGTERM,))


class WhenOrphaned(enum.Enum):
    """What a child of the supervisor does when the supervisor dies without ending it."""

    # Its own orderly stop (SIGTERM to itself), exiting at the latest ORPHAN_GRACE_SECONDS on.
    STOP = "stop"
    # A worker: kill its agents' process groups and exit at once, reporting nothing, so that
    # its task comes back `lost` (as a dead worker's does), never as the agent's failure.
    END_AGENTS = "end-agents"


def run_as_child(
    target: Callable[..., None], args: tuple[Any, ...], when: WhenOrphaned, generation_lock: Path
) -> None:
    """The entry of every process the supervisor starts: hold the generation's lock, watch the
    supervisor, then be the role.

    The shared lock is held by every child of one fleetd, so a new fleetd knows (from the
    kernel, whatever the pids) whether any is still running. The supervisor is watched through
    multiprocessing's parent sentinel, a pipe whose write end only the supervisor holds: it
    reads end-of-file when the supervisor dies, however it dies. (`PR_SET_PDEATHSIG` would not
    do: the children's parent is the fork server, which lives on as long as they do.)
    """
    lock = FileLock(generation_lock)
    lock.acquire(shared=True)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_when_parent_gone, args=(parent.sentinel, when), name="orphan", daemon=True
        ).start()
    try:
        target(*args)
    finally:
        lock.release()


def _when_parent_gone(sentinel: int, when: WhenOrphaned) -> None:
    poller = select.poll()
    poller.register(sentinel, select.POLLIN)
    while not poller.poll():
        pass
    logger.warning("the supervisor died without ending this process: ending it")
    if when is WhenOrphaned.END_AGENTS:
        end_children(signal.SIGKILL)
        os._exit(1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_SECONDS)
    logger.error("still running {:g} s after the supervisor died; exiting", ORPHAN_GRACE_SECONDS)
    os._exit(1)
