"""Hostile input on the control socket: garbage, wrong types, huge frames, strangers, hang-ups."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import messages as m
from tests.support.fleet import Fleet, running_fleet
from tests.support.requires import needs_root, needs_tools

pytestmark = pytest.mark.timeout(180)

# Requests that would change the daemon's life are never generated.
SAFE_TAGS = ["Enqueue", "ListTasks", "ShowTask", "CancelTask", "ListWorkers", "GetEvents",
             "GetStatus", "Nope", "", "Ready", "Finished"]  # fmt: skip

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=20),
    st.binary(max_size=20),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
tagged = st.builds(
    lambda tag, fields: msgspec.msgpack.encode({"msg": tag, **fields}),
    st.sampled_from(SAFE_TAGS),
    st.dictionaries(
        st.sampled_from(["task", "tasks", "state", "limit", "worker", "prompt", "x"]),
        values,
        max_size=3,
    ),
)
payloads = st.one_of(st.binary(max_size=200), tagged, values.map(msgspec.msgpack.encode))


@pytest.fixture(scope="module")
def shared_fleet() -> Iterator[Fleet]:
    with running_fleet("--workers", "1") as fleet:
        yield fleet


@pytest.fixture(scope="module")
def dealer(shared_fleet: Fleet) -> Iterator[zmq.Socket]:
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect("ipc://" + str(shared_fleet.state_dir / "fleetd.sock"))
    yield sock
    sock.close()
    context.term()


replies = m.CONTROL_REPLIES


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.lists(payloads, min_size=1, max_size=3))
def test_any_request_gets_a_typed_reply(dealer: zmq.Socket, frames: list[bytes]) -> None:
    dealer.send_multipart(frames)
    reply = replies.decode(dealer.recv())
    if len(frames) != 1:
        assert isinstance(reply, m.ErrorReply) and reply.code == "bad_request"
    else:
        assert isinstance(reply, m.Message)


def test_daemon_survives_the_fuzzing(shared_fleet: Fleet) -> None:
    task = shared_fleet.enqueue("still alive", "--", "true")
    shared_fleet.wait_state(task, "succeeded")
    assert shared_fleet.proc is not None and shared_fleet.proc.poll() is None


def test_huge_message_drops_the_connection_not_the_daemon(shared_fleet: Fleet) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect("ipc://" + str(shared_fleet.state_dir / "fleetd.sock"))
    sock.send(b"\x00" * (32 * 1024 * 1024))
    assert sock.poll(1500) == 0  # libzmq closed the connection at MAXMSGSIZE
    sock.close()
    context.term()
    assert shared_fleet.json("status")["pid"] == shared_fleet.pid


def test_half_open_and_garbage_stream_connections(shared_fleet: Fleet) -> None:
    path = str(shared_fleet.state_dir / "fleetd.sock")
    for junk in (b"", b"\xff" * 10, b"GET / HTTP/1.1\r\n\r\n", os.urandom(4096)):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(path)
        raw.sendall(junk)
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(2)
        try:
            while raw.recv(4096):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
        raw.close()
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(path)  # connected, silent, left open while others are served
    assert shared_fleet.json("status")["pid"] == shared_fleet.pid
    idle.close()


def test_control_socket_is_private(shared_fleet: Fleet) -> None:
    state = shared_fleet.state_dir
    assert stat.S_IMODE((state / "fleetd.sock").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


@needs_root()
@needs_tools("setpriv")
def test_another_uid_is_not_served_even_with_open_permissions(shared_fleet: Fleet) -> None:
    state = shared_fleet.state_dir
    path = state / "fleetd.sock"
    parents = [state, state.parent]
    modes = [p.stat().st_mode for p in parents]
    probe = (
        "import sys, zmq; c = zmq.Context(); s = c.socket(zmq.DEALER); s.setsockopt(zmq.LINGER, 0);"
        f"s.connect('ipc://{path}'); s.send(b'\\x81\\xa3msg\\xa9GetStatus');"
        "print('answered' if s.poll(1500) else 'ignored')"
    )
    try:
        for p in parents:
            p.chmod(0o755)
        path.chmod(0o666)
        result = subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
             sys.executable, "-c", probe],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        path.chmod(0o600)
        for p, mode in zip(parents, modes, strict=True):
            p.chmod(mode)
    assert result.stdout.strip() == "ignored", result.stderr
    assert shared_fleet.json("status")["pid"] == shared_fleet.pid
