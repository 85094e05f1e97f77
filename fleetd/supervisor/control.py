"""The control socket: a ZeroMQ ROUTER on a Unix socket that only its owner may use.

Either fleetd binds `<state>/fleetd.sock` itself (mode 0600, in a 0700 directory), or it
adopts the listening socket systemd passed (`LISTEN_FDS`). Either way libzmq filters peers by
uid (`IPC_FILTER_UID`), so another user's connection is dropped before any byte is read.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

import zmq
from loguru import logger

from fleetd.runtime.sockets import new_socket
from fleetd.supervisor.systemd import listen_fds
from shared import messages as m
from shared.errors import StateDirError

MAX_REQUEST_BYTES = m.MAX_CONTROL_REQUEST_BYTES
# Replies queued for one client that does not read them; past this they are dropped (a
# fleetctl has one request in flight), so such a client holds a few MB of fleetd, not the
# 10,000 replies (gigabytes of task listings) of the socket's default high-water mark.
REPLIES_QUEUED_PER_CLIENT = 8
REQUESTS_QUEUED_PER_CLIENT = 1000


def open_control_socket(
    context: zmq.Context, path: Path, env: Mapping[str, str]
) -> tuple[zmq.Socket, Path, bool]:
    """Bind (or adopt) the control socket; returns it, its path, and whether it was adopted."""
    sock = new_socket(context, zmq.ROUTER, linger_ms=0, hwm=REQUESTS_QUEUED_PER_CLIENT)
    sock.setsockopt(zmq.SNDHWM, REPLIES_QUEUED_PER_CLIENT)
    sock.setsockopt(zmq.IPC_FILTER_UID, os.getuid())
    if os.getuid() != 0:
        # root may control a fleetd that runs as a user of its own (the systemd unit's): it
        # could read and signal everything fleetd has anyway.
        sock.setsockopt(zmq.IPC_FILTER_UID, 0)
    # A peer sending more than this is disconnected by libzmq before we see the message.
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a client that went away is not an error
    fds = listen_fds(env)
    if fds:
        adopted = _adopted_path(fds[0])
        sock.setsockopt(zmq.USE_FD, fds[0])
        sock.bind("ipc://" + str(adopted))
        logger.info("control socket adopted from systemd: {}", adopted)
        return sock, adopted, True
    try:
        path.unlink(missing_ok=True)  # stale: the state-directory lock says nobody serves it
        sock.bind("ipc://" + str(path))
        path.chmod(0o600)
    except (zmq.ZMQError, OSError) as exc:
        sock.close()
        raise StateDirError(f"cannot bind the control socket {path}: {exc}") from exc
    return sock, path, False


def _adopted_path(fd: int) -> Path:
    """The path of a listening Unix socket we were handed, without taking ownership of the fd.

    A Python socket object that owned fd 3 would close it when garbage-collected, under
    libzmq's feet (which aborts the process), so the object is detached right away.
    """
    probe = socket.socket(fileno=fd)
    try:
        name = probe.getsockname()
    finally:
        probe.detach()
    if not isinstance(name, str) or not name:
        raise StateDirError(f"the socket passed as fd {fd} is not a Unix socket with a path")
    return Path(name)
