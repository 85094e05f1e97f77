"""Agents that misbehave: garbage, giant lines, closed stdout, runaway children."""

from __future__ import annotations

import time
from pathlib import Path

import apsw
import pytest

from tests.support.fleet import Fleet, wait_for
from tests.support.procs import processes_under

pytestmark = pytest.mark.timeout(120)


def _rows(fleet: Fleet, task: int) -> list[tuple[int, str, int, bytes]]:
    db = apsw.Connection(str(fleet.state_dir / "events.db"), flags=apsw.SQLITE_OPEN_READONLY)
    return db.execute(
        "SELECT e.seq, e.type, e.flags, e.payload FROM events e"
        " JOIN streams s ON s.execution_id = e.execution_id WHERE s.task_id = ? ORDER BY e.seq",
        (task,),
    ).fetchall()


def test_binary_garbage_is_kept_byte_for_byte(fleet: Fleet, tmp_path: Path) -> None:
    copy = tmp_path / "garbage"
    script = f"head -c 300000 /dev/urandom | tee {copy}"
    task = fleet.enqueue("garbage", "--", "sh", "-c", script)
    fleet.wait_state(task, "succeeded")
    rows = _rows(fleet, task)
    assert b"\n".join(payload for *_, payload in rows) == copy.read_bytes()
    assert any(kind == "binary" for _, kind, _, _ in rows)
    assert [seq for seq, *_ in rows] == list(range(1, len(rows) + 1))


def test_fifty_megabyte_line_is_stored_whole_and_flagged(fleet: Fleet) -> None:
    script = "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo '{\"after\":1}'"
    task = fleet.enqueue("huge", "--", "sh", "-c", script)
    fleet.wait_state(task, "succeeded", timeout=90)
    rows = _rows(fleet, task)
    assert [(seq, kind) for seq, kind, _, _ in rows] == [(1, "huge"), (2, "json")]
    assert len(rows[0][3]) == 50_000_000 and rows[0][3][:3] == b"xxx"
    assert rows[0][2] & 4  # FLAG_HUGE
    # The daemon is still healthy and the worker did not grow without bound.
    assert fleet.json("status")["counts"]["succeeded"] == 1


def test_invalid_utf8_and_missing_final_newline(fleet: Fleet) -> None:
    task = fleet.enqueue("utf8", "--", "sh", "-c", "printf 'ok\\n\\303\\050\\nlast'")
    fleet.wait_state(task, "succeeded")
    rows = _rows(fleet, task)
    assert [payload for *_, payload in rows] == [b"ok", b"\xc3\x28", b"last"]
    assert rows[1][1] == "binary" and rows[1][2] & 2  # FLAG_NOT_UTF8
    assert rows[2][2] & 16  # FLAG_NO_NEWLINE
    events = fleet.events(task)
    assert events[1]["payload"] == "\\xc3("
    assert "not_utf8" in events[1]["flags"]


def test_agent_that_closes_stdout_and_keeps_running(fleet: Fleet) -> None:
    script = "echo '{\"early\":1}'; exec >&-; sleep 1.5; exit 0"
    started = time.monotonic()
    task = fleet.enqueue("closer", "--", "sh", "-c", script)
    shown = fleet.wait_state(task, "succeeded")
    assert time.monotonic() - started >= 1.4
    assert shown["result"]["events"] == 1


def test_agent_whose_children_outlive_it(fleet: Fleet) -> None:
    # One child stays in the agent's group, one escapes into a session of its own; both hold
    # the agent's stdout open after the agent exits.
    script = "sleep 300 & setsid sleep 301 & echo '{\"forked\":2}'; exit 0"
    started = time.monotonic()
    task = fleet.enqueue("forker", "--", "sh", "-c", script)
    fleet.wait_state(task, "succeeded")
    assert time.monotonic() - started < 10
    wait_for(lambda: not processes_under(fleet.state_dir / "scratch"), 10, what="no children left")


def test_agent_ignoring_sigterm_is_killed_after_grace(fleet: Fleet) -> None:
    script = "trap '' TERM; echo '{\"stubborn\":1}'; while :; do sleep 0.1; done"
    task = fleet.enqueue("stubborn", "--timeout", "1", "--", "sh", "-c", script)
    shown = fleet.wait_state(task, "timed_out", timeout=30)
    assert shown["result"]["signal"] == 9
    wait_for(lambda: not processes_under(fleet.state_dir / "scratch"), 10, what="no agent left")
