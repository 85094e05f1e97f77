"""Hostile input on the control socket: garbage, wrong types, huge frames, strangers, hang-ups."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import typing
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import messages as m
from shared.models import TaskSpec
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

# --- every request type, each field given any value of its own shape or of a wrong one --------

settings.register_profile(
    "control-fuzz", max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck)
)
FUZZ = settings.get_profile("control-fuzz")

# Markers replaced in the encoded frame by what msgspec will not encode: a msgpack str that is
# not UTF-8, and arrays nested far deeper than any decoder recurses.
BAD_UTF8, DEEP = "\ue000bad-utf8", "\ue000deep"
RAW = {
    msgspec.msgpack.encode(BAD_UTF8): b"\xa4\xff\xfe\xc3\x28",
    msgspec.msgpack.encode(DEEP): b"\x91" * 100_000 + b"\xc0",
}
EDGE_INTS = [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]
EDGE_FLOATS = [float("nan"), float("inf"), float("-inf"), 1e300, -0.0, 5e-324]

wrong = st.one_of(
    values,
    st.sampled_from([*EDGE_INTS, *EDGE_FLOATS, BAD_UTF8, DEEP, "a\x00b", "", [[[[]]]], {"": {}}]),
)


def right(info: Any) -> st.SearchStrategy[Any]:
    """Any value of the shape `info` (a msgspec.inspect type) describes, bounds ignored."""
    t = msgspec.inspect
    if isinstance(info, t.IntType):
        return st.one_of(st.integers(-(2**63), 2**64 - 1), st.sampled_from(EDGE_INTS))
    if isinstance(info, t.FloatType):
        return st.one_of(st.floats(), st.sampled_from(EDGE_FLOATS))
    if isinstance(info, t.StrType):
        return st.one_of(st.text(max_size=12), st.sampled_from(["a\x00b", BAD_UTF8, "/tmp"]))
    if isinstance(info, t.BoolType):
        return st.booleans()
    if isinstance(info, t.NoneType):
        return st.none()
    if isinstance(info, t.LiteralType):
        return st.sampled_from([*info.values, "bogus"])
    if isinstance(info, t.UnionType):
        return st.one_of(*(right(member) for member in info.types))
    if isinstance(info, t.ListType):
        return st.lists(right(info.item_type), max_size=3)
    if isinstance(info, t.DictType):
        return st.dictionaries(right(info.key_type), right(info.value_type), max_size=2)
    if isinstance(info, t.StructType):
        return st.fixed_dictionaries({}, optional=fields_of(info))
    raise AssertionError(f"no strategy for {info}")


# TaskSpec fields whose valid values would do something outside the test (a real Codex run,
# a git clone, any program): only values that are harmless or refused.
SAFE_SPEC = {
    "agent": st.sampled_from(["command", "bogus", "", 7]),
    "argv": st.sampled_from([["true"], ["true", "a\x00b"], ["a\x00b"], [], "true", [DEEP]]),
    "repo": st.sampled_from([None, "/nonexistent/repo", "a\x00b", BAD_UTF8, 3]),
    "cwd": st.sampled_from([None, "/nonexistent/dir", "/etc/hostname", "a\x00b", 2**64 - 1]),
}


def fields_of(info: Any) -> dict[str, st.SearchStrategy[Any]]:
    out = {f.name: st.one_of(right(f.type), wrong) for f in info.fields}
    if info.cls is TaskSpec:
        out = {**out, **SAFE_SPEC}
    return out


def request_of(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    info = msgspec.inspect.type_info(cls)
    fields = fields_of(info)
    if cls is m.Enqueue:  # every spec names a harmless agent and argv
        spec = st.fixed_dictionaries(
            {"agent": SAFE_SPEC["agent"], "argv": SAFE_SPEC["argv"]},
            optional={k: v for k, v in fields_of(msgspec.inspect.type_info(TaskSpec)).items()
                      if k not in ("agent", "argv")},
        )  # fmt: skip
        fields = {"tasks": st.one_of(st.lists(spec, max_size=3), wrong)}
    if cls is m.Stop:  # only timeouts it must refuse: a valid Stop would end the fleet
        fields = {"timeout": st.sampled_from([*EDGE_FLOATS[:4], -1.0, 0.0, 2**64 - 1, "5", [1]])}
        return st.fixed_dictionaries({"timeout": fields["timeout"]})
    return st.fixed_dictionaries({}, optional=fields)


# Drain has no field to be hostile in: any Drain is a valid one, and would end the fleet.
FUZZED_TYPES = [t for t in typing.get_args(m.ControlRequest) if t is not m.Drain]
typed_requests = st.sampled_from(FUZZED_TYPES).flatmap(
    lambda cls: request_of(cls).map(lambda fields: {"msg": cls.__name__, **fields})
)


def encoded(request: dict[str, Any]) -> bytes:
    frame = msgspec.msgpack.encode(request)
    for marker, raw in RAW.items():
        frame = frame.replace(marker, raw)
    return frame


@FUZZ
@given(request=typed_requests)
def test_every_request_type_with_any_value_gets_a_typed_reply(
    dealer: zmq.Socket, request: dict[str, Any]
) -> None:
    dealer.send(encoded(request))
    reply = replies.decode(dealer.recv())  # a typed reply, never silence (RCVTIMEO raises)
    assert isinstance(reply, m.Message)
    if isinstance(reply, m.ErrorReply):
        assert reply.code != "internal", (request, reply)  # refused at decode, not deep inside


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
    shared_fleet.wait_state(task, "succeeded", timeout=120)
    assert shared_fleet.proc is not None and shared_fleet.proc.poll() is None
    status = shared_fleet.status()
    assert status.pid == shared_fleet.pid
    assert {p.role: p.restarts for p in status.processes} == {
        p.role: 0 for p in status.processes
    }, status


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
