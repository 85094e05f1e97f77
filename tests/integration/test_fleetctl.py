"""fleetctl against a real fleetd: output shapes, exit codes, batches, keys, cancel, timeouts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.fleet import FLEETCTL, Fleet, short_tempdir, wait_for
from tests.support.procs import processes_under, title

pytestmark = pytest.mark.timeout(90)

SLEEPER = ["--", "sh", "-c", 'echo \'{"type":"started"}\'; exec sleep 300']


def test_json_shapes_of_list_workers_status(fleet: Fleet) -> None:
    task = fleet.enqueue("noop", "--", "true")
    fleet.wait_state(task, "succeeded")
    listed = fleet.json("list")
    assert listed[0]["id"] == task and listed[0]["state"] == "succeeded"
    assert {"enqueued_at", "started_at", "finished_at"} <= set(listed[0])
    workers = fleet.json("workers")
    assert sorted(w["id"] for w in workers) == ["w1", "w2"]
    assert all(set(w) >= {"id", "pid", "state", "task"} for w in workers)
    assert {w["state"] for w in workers} <= {"idle", "busy"}
    status = fleet.json("status")
    assert status["pid"] == fleet.pid
    assert status["counts"]["succeeded"] == 1 and status["counts"]["queued"] == 0
    roles = sorted(p["role"] for p in status["processes"])
    assert roles == ["broker", "recorder", "worker 1", "worker 2"]
    assert all(p["pid"] for p in status["processes"])


def test_process_titles_show_roles(fleet: Fleet) -> None:
    status = fleet.json("status")
    for process in status["processes"]:
        assert title(process["pid"]) == f"fleetd: {process['role']}"


def test_enqueue_file_in_one_round_trip(fleet: Fleet, tmp_path: Path) -> None:
    lines = [
        {
            "prompt": f"task {i}",
            "argv": ["sh", "-c", f"echo '{{\"n\":{i}}}'"],
            "labels": {"i": str(i)},
        }
        for i in range(5)
    ]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    ids = [int(x) for x in fleet.ctl("enqueue", "--file", str(path)).stdout.split()]
    assert len(ids) == 5 and ids == sorted(ids)
    for i, task in enumerate(ids):
        shown = fleet.wait_state(task, "succeeded")
        assert shown["spec"]["labels"] == {"i": str(i)}
        assert fleet.events(task)[0]["payload"] == {"n": i}


def test_enqueue_file_errors_name_the_line(fleet: Fleet, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "argv": ["true"]}\n{"prompt": "x", "bogus": 1}\n')
    result = fleet.ctl("enqueue", "--file", str(path), check=False)
    assert result.returncode == 2
    assert "line 2" in result.stderr and "bogus" in result.stderr
    assert fleet.json("list") == []


def test_idempotency_key_gives_the_same_task(fleet: Fleet) -> None:
    first = fleet.enqueue("once", "--key", "k-1", "--", "true")
    second = fleet.enqueue("once", "--key", "k-1", "--", "true")
    assert first == second
    other = fleet.ctl("enqueue", "once again", "--key", "k-1", "--", "true", check=False)
    assert other.returncode == 1 and f"key 'k-1' is task {first}" in other.stderr
    assert len(fleet.json("list")) == 1


def test_exit_codes(fleet: Fleet) -> None:
    assert fleet.ctl("show", "999", check=False).returncode == 1
    assert "no task 999" in fleet.ctl("show", "999", check=False).stderr
    assert fleet.ctl("enqueue", check=False).returncode == 2
    assert fleet.ctl("list", "--state", "nope", check=False).returncode == 2
    assert fleet.ctl("enqueue", "x", "--agent", "command", check=False).returncode == 2


def test_fleetctl_without_daemon_exits_3() -> None:
    root = short_tempdir()
    result = subprocess.run(
        [*FLEETCTL, "--state-dir", str(root / "none"), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "fleetd is not running" in result.stderr and "start it with `fleetd`" in result.stderr


def test_cancel_queued_task_never_starts(fleet: Fleet) -> None:
    busy = [fleet.enqueue("hold", *SLEEPER) for _ in range(2)]
    for task in busy:
        fleet.wait_state(task, "running")
    queued = fleet.enqueue("never", "--", "sh", "-c", "echo ran")
    cancelled = fleet.json("cancel", str(queued))
    assert cancelled == {"id": queued, "state": "cancelled", "pending": False}
    for task in busy:
        fleet.ctl("cancel", str(task))
    for task in busy:
        fleet.wait_state(task, "cancelled")
    shown = fleet.show(queued)
    assert shown["state"] == "cancelled" and shown["executions"] == []
    assert fleet.events(queued) == []


def test_cancel_running_task_ends_its_process_group(fleet: Fleet) -> None:
    script = 'sleep 300 & sleep 300 & echo \'{"type":"forked"}\'; wait'
    task = fleet.enqueue("group", "--", "sh", "-c", script)
    wait_for(lambda: fleet.events(task), what="the agent's first event")
    assert processes_under(fleet.state_dir), "the agent should be running"
    started = time.monotonic()
    fleet.ctl("cancel", str(task))
    shown = fleet.wait_state(task, "cancelled")
    assert time.monotonic() - started < 10
    assert shown["result"]["reason"] == "cancelled by request"
    wait_for(lambda: not processes_under(fleet.state_dir / "scratch"), 5, what="no agent left")


def test_wall_clock_timeout(fleet: Fleet) -> None:
    task = fleet.enqueue("slow", "--timeout", "1", *SLEEPER)
    shown = fleet.wait_state(task, "timed_out", timeout=20)
    assert shown["result"]["reason"] == "wall-clock timeout reached (1 s)"
    assert shown["result"]["timeout_kind"] == "wall"
    assert shown["result"]["signal"] == 15
    assert not processes_under(fleet.state_dir / "scratch")


def test_idle_timeout_ends_a_silent_agent(fleet: Fleet) -> None:
    # Talks for a while (each line resets the idle clock), then hangs silently.
    script = 'for i in 1 2 3 4; do echo "{\\"type\\":\\"tick\\"}"; sleep 0.3; done; sleep 300'
    task = fleet.enqueue(
        "hangs", "--timeout", "120", "--idle-timeout", "1", "--", "sh", "-c", script
    )
    shown = fleet.wait_state(task, "timed_out", timeout=30)
    assert shown["result"]["timeout_kind"] == "idle"
    assert shown["result"]["reason"] == "idle timeout: no output for 1 s"
    assert [e["type"] for e in fleet.events(task)] == ["tick"] * 4
    wait_for(lambda: not processes_under(fleet.state_dir / "scratch"), 5, what="no agent left")


def test_failed_agent_reports_exit_status(fleet: Fleet) -> None:
    task = fleet.enqueue("fail", "--", "sh", "-c", "echo oops >&2; exit 7")
    shown = fleet.wait_state(task, "failed")
    assert shown["result"]["exit_code"] == 7
    assert shown["result"]["error"] == "agent exited with status 7"
    assert shown["result"]["stderr_tail"] == "oops"


def test_missing_binary_fails_with_reason(fleet: Fleet) -> None:
    task = fleet.enqueue("nothing", "--", "/nonexistent/agent")
    shown = fleet.wait_state(task, "failed")
    assert "cannot start agent" in shown["result"]["error"]


def test_events_follow_streams_until_the_task_ends(fleet: Fleet) -> None:
    script = 'for i in 1 2 3 4 5; do echo "{\\"i\\":$i}"; sleep 0.2; done'
    task = fleet.enqueue("ticks", "--", "sh", "-c", script)
    result = fleet.ctl("events", str(task), "--follow", "--json", timeout=30)
    payloads = [json.loads(line)["payload"] for line in result.stdout.splitlines()]
    assert payloads == [{"i": i} for i in range(1, 6)]
    assert fleet.show(task)["state"] == "succeeded"


def test_human_output(fleet: Fleet) -> None:
    task = fleet.enqueue("hello", "--label", "team=core", "--", "sh", "-c", "echo hi")
    fleet.wait_state(task, "succeeded")
    shown = fleet.ctl("show", str(task)).stdout
    assert "state:" in shown and "succeeded" in shown and "team=core" in shown
    assert "EXECUTION" in fleet.ctl("show", str(task)).stdout
    assert "hi" in fleet.ctl("events", str(task)).stdout
    assert "ID" in fleet.ctl("list").stdout.splitlines()[0]
    assert "fleetd pid" in fleet.ctl("status").stdout
    assert "WORKER" in fleet.ctl("workers").stdout


def test_a_fleetd_that_does_not_answer_names_the_option_that_waits_longer(fleet: Fleet) -> None:
    os.kill(fleet.pid, signal.SIGSTOP)  # alive, connected, silent
    try:
        for args in (["--request-timeout", "0.5", "status"], ["--request-timeout", "0.5", "list"]):
            result = fleet.ctl(*args, check=False)
            assert result.returncode == 3, result  # fleetd unreachable
            assert "did not answer within 0.5 s" in result.stderr
            assert "--request-timeout" in result.stderr and "Traceback" not in result.stderr
    finally:
        os.kill(fleet.pid, signal.SIGCONT)


def test_one_sqlite_node_names_itself_and_filters_by_node(fleet: Fleet) -> None:
    fleet.env["FLEET_NODE_NAME"] = "solo"  # fleetctl reads no node name: the daemon's is shown
    task = fleet.enqueue("noop", "--", "true")
    fleet.wait_state(task, "succeeded")
    node = fleet.json("workers")[0]["node"]
    assert node and {w["node"] for w in fleet.json("workers")} == {node}
    assert fleet.json("workers", "--node", node) == fleet.json("workers")
    assert fleet.json("workers", "--node", "elsewhere") == []
    assert [w["node"] for w in fleet.json("status", "--node", node)["workers"]] == [node, node]
    assert [e["node"] for e in fleet.show(task)["executions"]] == [node]
    assert "NODE" in fleet.ctl("workers").stdout
