"""What every fleetd process does at start: its title, its logging, its signals."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from types import FrameType

import setproctitle
from loguru import logger

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` when our parent exits, so no child outlives fleetd."""
    _prctl(PR_SET_PDEATHSIG, sig)


def become_subreaper() -> None:
    """Orphaned descendants (agents of a dead worker) are re-parented to us, not to init."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def configure_logging(role: str, level: str, json_lines: bool) -> None:
    """Loguru to stderr, each line tagged with the process role."""
    logger.remove()
    logger.configure(extra={"role": role})
    # diagnose=False: a traceback must not print local variables (task specs, secrets).
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
    """SIGTERM (and optionally SIGINT) set a flag and wake the process loop through a socket.

    The read end is registered in the loop's poller; the handler does nothing else.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        self.received: int | None = None
        self.count = 0
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
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
    die_with_parent(signal.SIGTERM)
    return ShutdownSignal((signal.SIGTERM,))
