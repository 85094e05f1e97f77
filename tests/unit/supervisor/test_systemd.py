"""The notify protocol's pieces: the watchdog interval, datagrams, socket-activation fds."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from fleetd.supervisor.systemd import Notifier, listen_fds


def test_watchdog_pings_at_half_of_watchdog_usec() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval == 1.0


def test_watchdog_meant_for_another_process_or_garbled_is_ignored() -> None:
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval is None
    assert Notifier({}).watchdog_interval is None


def test_datagrams_carry_newline_separated_fields(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    try:
        notifier.ready("running 2 workers")
        notifier.watchdog()
        notifier.stopping("stopping (signal 15)")
        received = [listener.recv(4096).decode() for _ in range(3)]
    finally:
        notifier.close()
        listener.close()
    assert received == [
        f"READY=1\nSTATUS=running 2 workers\nMAINPID={os.getpid()}",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=stopping (signal 15)",
    ]


def test_no_notify_socket_means_silence() -> None:
    notifier = Notifier({})
    assert notifier.sock is None
    notifier.ready("ignored")  # must not raise


def test_listen_fds_only_for_this_process() -> None:
    assert listen_fds({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"}) == [3, 4]
    assert listen_fds({"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}) == []
    assert listen_fds({"LISTEN_FDS": "1"}) == []
