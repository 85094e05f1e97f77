"""Which pid namespace a process is in: what decides whether a pid one process reports means
anything to another (fleetctl on the host, fleetd in a container see different pids)."""

from __future__ import annotations

import os


def pid_namespace() -> int:
    """This process's pid namespace: the inode of `/proc/self/ns/pid`, 0 if it cannot be read."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0
