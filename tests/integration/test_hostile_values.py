"""Hostile values through the real fleetctl and a real fleetd: each is a clear error (exit 2
for usage, 1 otherwise), never a traceback, nothing stored half-done, and the fleet runs on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import messages as m
from shared.errors import RequestFailed
from shared.models import TaskSpec
from tests.support.fleet import FLEETD, Fleet, running_fleet, short_tempdir

pytestmark = pytest.mark.timeout(180)

BIG = str(2**64)
INT64_PAST = str(2**63)


@pytest.fixture(scope="module")
def shared_fleet() -> Iterator[Fleet]:
    with running_fleet("--workers", "1") as fleet:
        yield fleet


def refused(fleet: Fleet, *args: str, code: int = 2, words: str = "") -> str:
    """Run fleetctl, expecting it to refuse with `code` and a one-line reason; the reason."""
    result = fleet.ctl(*args, check=False)
    assert result.returncode == code, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert words in result.stderr, result.stderr
    return result.stderr


def send_raw(fleet: Fleet, request: m.Message) -> m.Message:
    """Send `request` as is, past the client's own check, as any program on the socket could."""
    client = fleet.client
    client.sock = client._socket()
    client.sock.send(m.CONTROL_REQUESTS.encode(request))
    assert client.sock.poll(20_000), "no reply"
    return m.CONTROL_REPLIES.decode(client.sock.recv())


def assert_unharmed(fleet: Fleet) -> None:
    status = fleet.status()
    assert status.pid == fleet.pid
    assert [p.restarts for p in status.processes] == [0] * len(status.processes), status
    assert status.counts.get("queued", 0) == 0 and status.counts.get("running", 0) == 0


@pytest.mark.parametrize("hours", ["nan", "inf", "1e300", "-1"])
def test_gc_refuses_hours_that_are_no_number_of_hours(shared_fleet: Fleet, hours: str) -> None:
    refused(shared_fleet, "gc", "--older-than", hours, words="--older-than")
    assert_unharmed(shared_fleet)


@pytest.mark.parametrize(
    "request_",
    [
        m.CollectWorkspaces(older_than_hours=float("nan")),
        m.CollectWorkspaces(older_than_hours=1e300),
        m.GetEvents(task=1, after_seq=2**63),
        m.GetEvents(task=2**63),
        m.ShowTask(task=2**63),
        m.CancelTask(task=2**63),
        m.RetryTask(task=2**63),
        m.Stop(timeout=float("inf")),
        m.Enqueue(tasks=[TaskSpec(prompt="p", agent="command", argv=["true"], max_attempts=2**63)]),
        m.Enqueue(tasks=[TaskSpec(prompt="nul", agent="command", argv=["echo", "a\x00b"])]),
    ],
    ids=repr,
)
def test_a_hand_made_request_out_of_bounds_gets_a_typed_bad_request(
    shared_fleet: Fleet, request_: m.Message
) -> None:
    reply = send_raw(shared_fleet, request_)
    assert isinstance(reply, m.ErrorReply) and reply.code == "bad_request", reply
    assert_unharmed(shared_fleet)


def test_six_hostile_event_queries_do_not_stop_the_fleet(shared_fleet: Fleet) -> None:
    for _ in range(7):
        reply = send_raw(shared_fleet, m.GetEvents(task=1, after_seq=2**63))
        assert isinstance(reply, m.ErrorReply) and reply.code == "bad_request", reply
    assert_unharmed(shared_fleet)


def test_the_client_refuses_what_the_daemon_would(shared_fleet: Fleet) -> None:
    with pytest.raises(RequestFailed) as refused_here:
        shared_fleet.request(m.GetEvents(task=1, after_seq=2**63))
    assert refused_here.value.code == "bad_request"


def test_list_limit_past_one_page_is_capped_and_says_so(shared_fleet: Fleet) -> None:
    """More than one listing holds is not an error (scripts ask for "all"), but the reply
    says that it was capped rather than returning fewer rows silently."""
    result = shared_fleet.ctl("list", "--limit", "100000", "--json")
    assert json.loads(result.stdout) == []
    assert f"showing at most {m.LIST_LIMIT_MAX}" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("show", BIG),
        ("show", INT64_PAST),
        ("cancel", BIG),
        ("retry", INT64_PAST),
        ("events", INT64_PAST),
        ("diff", INT64_PAST),
        ("diff", "1", "--execution", BIG),
        ("enqueue", "x", "--timeout", "nan", "--", "true"),
        ("enqueue", "x", "--timeout", "inf", "--", "true"),
        ("enqueue", "x", "--idle-timeout", "nan", "--", "true"),
        ("enqueue", "x", "--max-attempts", INT64_PAST, "--", "true"),
        ("enqueue", "x", "--max-attempts", BIG, "--", "true"),
        ("enqueue", "x", "--", "echo", "a\udcffb"),  # invalid UTF-8 in argv
        ("enqueue", "x\udcff", "--", "true"),  # and in the prompt
        ("enqueue", "x", "--cwd", "/etc/hostname", "--", "true"),
        ("enqueue", "x", "--cwd", "/nonexistent/dir", "--", "true"),
        ("enqueue", "x", "--repo", "/nonexistent/repo"),
        ("--request-timeout", "nan", "status"),
        ("--request-timeout", "inf", "status"),
        ("stop", "--timeout", "nan"),
        ("stop", "--timeout", "inf"),
    ],
    ids=lambda args: " ".join(args).encode("utf-8", "backslashreplace").decode(),
)
def test_fleetctl_refuses_values_out_of_bounds_with_exit_2(
    shared_fleet: Fleet, args: tuple[str, ...]
) -> None:
    refused(shared_fleet, *args)
    assert_unharmed(shared_fleet)
    assert shared_fleet.json("list") == []  # nothing stored


def test_a_nul_byte_in_a_task_file_is_refused_and_the_fleet_runs_on(
    shared_fleet: Fleet, tmp_path: Path
) -> None:
    tasks = tmp_path / "nul.jsonl"
    tasks.write_text('{"prompt":"nul","argv":["echo", "a\\u0000b"],"max_attempts":10}\n')
    refused(shared_fleet, "enqueue", "--file", str(tasks), words="NUL byte")
    assert_unharmed(shared_fleet)
    assert shared_fleet.json("list") == []


def test_a_task_file_that_is_not_utf8_is_refused(shared_fleet: Fleet, tmp_path: Path) -> None:
    tasks = tmp_path / "bad.jsonl"
    tasks.write_bytes(b'{"prompt":"\xff","argv":["true"]}\n')
    refused(shared_fleet, "enqueue", "--file", str(tasks), words="not UTF-8")


def test_a_task_file_cwd_that_is_a_file_is_refused(shared_fleet: Fleet, tmp_path: Path) -> None:
    tasks = tmp_path / "cwd.jsonl"
    tasks.write_text(json.dumps({"prompt": "p", "argv": ["true"], "cwd": "/etc/hostname"}) + "\n")
    refused(shared_fleet, "enqueue", "--file", str(tasks), words="is not a directory")


def test_a_request_over_the_size_limit_is_refused_not_timed_out(
    shared_fleet: Fleet, tmp_path: Path
) -> None:
    tasks = tmp_path / "big.jsonl"
    line = json.dumps({"prompt": "x" * (m.MAX_CONTROL_REQUEST_BYTES + 1024), "argv": ["true"]})
    tasks.write_text(line + "\n")
    # A long timeout: a dropped request would wait all of it and then exit 3.
    refused(shared_fleet, "--request-timeout", "120", "enqueue", "--file", str(tasks), words="MiB")
    assert_unharmed(shared_fleet)


def test_a_state_dir_that_is_not_utf8_is_refused(shared_fleet: Fleet) -> None:
    refused(shared_fleet, "--state-dir", "/tmp/not-utf8-\udcff", "status", words="UTF-8")


def test_a_key_reused_with_another_spec_is_a_conflict(shared_fleet: Fleet) -> None:
    first = shared_fleet.enqueue("one", "--key", "hostile-k", "--", "true")
    assert shared_fleet.enqueue("one", "--key", "hostile-k", "--", "true") == first
    refused(shared_fleet, "enqueue", "two", "--key", "hostile-k", "--", "true", code=1,
            words=f"task {first}")  # fmt: skip
    shared_fleet.wait_state(first, "succeeded")
    assert [t["id"] for t in shared_fleet.json("list")] == [first]


# --- databases checked at start ---------------------------------------------------------------


def start_refused(state: Path, *args: str) -> str:
    """fleetd on `state` exits 1 at once, saying why; its output."""
    env = dict(os.environ, FLEET_STATE_DIR=str(state))
    done = subprocess.run(
        [*FLEETD, "--workers", "1", *args],
        env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_a_corrupt_queue_says_not_a_database_at_start() -> None:
    root = short_tempdir()
    state = root / "s"
    state.mkdir(mode=0o700)
    (state / "queue.db").write_bytes(os.urandom(8192))
    try:
        assert "queue.db is not a database" in start_refused(state, "--foreground")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_read_only_queue_is_refused_at_start() -> None:
    with running_fleet("--workers", "1") as fleet:
        db = fleet.state_dir / "queue.db"
        fleet.ctl("stop")
        fleet.wait_exit()
        db.chmod(0o400)
        try:
            words = "queue.db is not writable (mode 0400)"
            assert words in start_refused(fleet.state_dir, "--foreground")
        finally:
            db.chmod(0o600)


@pytest.mark.parametrize("detached", [False, True])
def test_fleetd_refuses_a_state_dir_that_is_not_utf8(detached: bool) -> None:
    root = short_tempdir()
    try:
        state = root / "not-utf8-\udcff"
        words = start_refused(state, *([] if detached else ["--foreground"]))
        assert "is not a UTF-8 path" in words
    finally:
        shutil.rmtree(root, ignore_errors=True)
