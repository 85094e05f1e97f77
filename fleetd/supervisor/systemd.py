"""The systemd notify protocol, spoken directly (no libsystemd).

READY, STATUS, STOPPING and WATCHDOG datagrams; socket activation's LISTEN_FDS.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping

from loguru import logger


class Notifier:
    """Sends datagrams to `$NOTIFY_SOCKET`; does nothing when fleetd is not run by systemd."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.address: str | None = env.get("NOTIFY_SOCKET") or None
        if self.address and self.address.startswith("@"):
            self.address = "\0" + self.address[1:]  # abstract namespace
        self.watchdog_interval = _watchdog_interval(env)
        self.sock: socket.socket | None = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, *fields: str) -> None:
        if self.sock is None or self.address is None:
            return
        try:
            self.sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            logger.warning("systemd notify to {} failed: {}", self.address, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of `$WATCHDOG_USEC`, if the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2 / 1_000_000
    except ValueError:
        return None


def listen_fds(env: Mapping[str, str]) -> list[int]:
    """File descriptors passed by systemd socket activation (`LISTEN_FDS`), for this process."""
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    return list(range(3, 3 + count))
