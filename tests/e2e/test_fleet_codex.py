"""A real fleetd running the real Codex CLI against the scripted loopback `ModelServer`.

Tasks go in through `fleetctl` only; results and events come back through `fleetctl` only.
The fleet's environment is the host's plus a private `CODEX_HOME` (offline config pointing
at the server), an API key and `FLEET_CODEX_BIN`; the worker's allow-list decides what of it
reaches codex.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shlex
import signal
from pathlib import Path
from typing import Any

import pytest

from shared.config import agent_environment, load_config
from tests.support.codex_env import (
    codex_argv,
    codex_binary,
    make_codex_home,
    run_codex,
)
from tests.support.codex_fleet import (
    API_KEY,
    MODEL,
    TERMINAL,
    enqueue_codex,
    files_containing,
    fleet_env,
    workdir,
)
from tests.support.fleet import running_fleet
from tests.support.model_server import ModelServer, Turn, function_call_outputs
from tests.support.procs import processes_under
from tests.support.requires import needs_codex

pytestmark = needs_codex()

# Fields that legitimately differ between two runs of the same scripted conversation.
VOLATILE_KEYS = frozenset({"thread_id"})


def with_usage(turn: Turn, input_tokens: int, output_tokens: int) -> Turn:
    return dataclasses.replace(turn, input_tokens=input_tokens, output_tokens=output_tokens)


def hello_script(server: ModelServer) -> list[Turn]:
    """One `exec_command` writing hello.txt, then a message; distinctive token counts."""
    return [
        with_usage(server.shell("echo hello > hello.txt", call_id="call_hello"), 17, 5),
        server.message("Done: wrote hello.txt", input_tokens=123, output_tokens=45),
    ]


def payloads(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["payload"] for event in events]


def normalized(event: dict[str, Any]) -> Any:
    """An event without the fields that differ from run to run (thread ids)."""
    if isinstance(event, dict):
        return {k: normalized(v) for k, v in event.items() if k not in VOLATILE_KEYS}
    if isinstance(event, list):
        return [normalized(v) for v in event]
    return event


def shape(event: dict[str, Any]) -> tuple[Any, ...]:
    """An event's structure: type, item type and text, exit code, usage."""
    item = event.get("item") or {}
    return (
        event["type"],
        item.get("type"),
        item.get("text"),
        item.get("exit_code"),
        json.dumps(event.get("usage"), sort_keys=True),
    )


def usage_of(events: list[dict[str, Any]]) -> tuple[int, int]:
    """Input and output tokens summed over codex's `turn.completed` events."""
    done = [e for e in events if e["type"] == "turn.completed"]
    return (
        sum(e["usage"]["input_tokens"] for e in done),
        sum(e["usage"]["output_tokens"] for e in done),
    )


def assert_stored_in_order(events: list[dict[str, Any]]) -> None:
    """One execution, contiguous sequence numbers from 1, clean JSON events typed as they say."""
    assert events, "no events stored"
    assert len({e["execution"] for e in events}) == 1
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["flags"] == [] for e in events), [e for e in events if e["flags"]]
    assert [e["type"] for e in events] == [e["payload"]["type"] for e in events]


def end_processes_under(directory: Path) -> None:
    """SIGKILL what a direct codex run left in `directory`: its shell-snapshot `bash -lc`
    runs in a session of its own, so killing codex's process group misses it."""
    for pid in processes_under(directory):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp)


@pytest.mark.timeout(90)
def test_codex_task_runs_a_command_and_records_every_event(
    tmp_path: Path, server: ModelServer
) -> None:
    """A codex task writes a file, succeeds, and its stored events are codex's stdout."""
    prompt = "create hello.txt"
    server.script(hello_script(server))
    work = workdir(tmp_path, "fleet-work")
    env = fleet_env(tmp_path, server)
    with running_fleet("--workers", "2", env=env) as fleet:
        task = enqueue_codex(fleet, prompt, work)
        shown = fleet.wait_state(task, *TERMINAL)
        events = fleet.events(task)
        leaks = files_containing(fleet.state_dir, API_KEY.encode())
        leaks += [name for name, text in [("log", fleet.log())] if API_KEY in text]
    assert not processes_under(work), "codex processes outlived the fleet"
    fleet_requests = list(server.requests)

    # The reference for what codex prints: the same conversation, codex run directly in a fresh
    # CODEX_HOME and an identical empty directory, with the environment fleetd gives it (the
    # allow-list matters: seen here, without the host's SHLVL the agent's `bash -c` runs
    # ~/.bashrc, whose pyenv lines print into the command's output).
    server.script(hello_script(server))
    direct_work = workdir(tmp_path, "direct-work")
    direct_home = make_codex_home(tmp_path / "direct-codex-home", server.base_url)
    direct_env = agent_environment(load_config(env), env) | {"CODEX_HOME": str(direct_home)}
    try:
        direct = run_codex(codex_argv(prompt, direct_work), direct_env)
    finally:
        end_processes_under(direct_work)
    assert direct.returncode == 0, direct.stderr

    assert shown["state"] == "succeeded", shown
    assert (work / "hello.txt").read_text() == "hello\n"
    result = shown["result"]
    assert result["exit_code"] == 0
    assert result["final_message"] == "Done: wrote hello.txt"
    assert (result["usage"]["input_tokens"], result["usage"]["output_tokens"]) == (140, 50)
    assert (result["usage"]["input_tokens"], result["usage"]["output_tokens"]) == usage_of(
        payloads(events)
    )
    assert result["usage"]["total_tokens"] == 190
    assert result["commands"] == 1
    assert result.get("failed_commands", 0) == 0, "omitted from JSON when zero"
    assert result["events"] == len(events)
    [started] = [e["payload"] for e in events if e["type"] == "thread.started"]
    assert result["thread_id"] == started["thread_id"]
    [execution] = shown["executions"]
    assert execution["outcome"] == "succeeded"
    assert execution["result"]["final_message"] == "Done: wrote hello.txt"

    assert_stored_in_order(events)
    stored = payloads(events)
    assert len(stored) == len(direct.events)
    assert [shape(e) for e in stored] == [shape(e) for e in direct.events]
    assert [normalized(e) for e in stored] == [normalized(e) for e in direct.events]

    # Codex under fleetd used the CODEX_HOME provider and the key from the fleet's environment,
    # which never reached the state directory or the log.
    assert not leaks, f"API key written to {leaks}"
    assert [r.path for r in fleet_requests] == ["/v1/responses", "/v1/responses"]
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in fleet_requests)
    assert all(r.body["model"] == MODEL for r in fleet_requests)
    [output] = function_call_outputs(fleet_requests[1].body)
    assert output["call_id"] == "call_hello"


@pytest.mark.timeout(90)
def test_stored_events_are_codex_stdout_line_for_line(tmp_path: Path, server: ModelServer) -> None:
    """Codex's stdout, teed to a file on its way to fleetd, equals the stored events: same
    count, same order, each payload the very line codex printed (spool-independent truth)."""
    truth = tmp_path / "codex-stdout.jsonl"
    wrapper = tmp_path / "codex-tee"
    wrapper.write_text(
        "#!/bin/bash\nset -o pipefail\n"
        f'{shlex.quote(str(codex_binary()))} "$@" | tee -a {shlex.quote(str(truth))}\n'
    )
    wrapper.chmod(0o755)
    server.script(hello_script(server))
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "2", env=fleet_env(tmp_path, server, wrapper)) as fleet:
        task = enqueue_codex(fleet, "create hello.txt", work)
        shown = fleet.wait_state(task, *TERMINAL)
        events = fleet.events(task)
    assert not processes_under(work), "codex processes outlived the fleet"

    assert shown["state"] == "succeeded", shown
    assert (work / "hello.txt").read_text() == "hello\n"
    lines = truth.read_bytes().split(b"\n")
    assert lines[-1] == b"", "codex's last line ends with a newline"
    lines = lines[:-1]
    assert_stored_in_order(events)
    assert len(events) == len(lines)
    assert payloads(events) == [json.loads(line) for line in lines]
    # Re-serialised compactly, each stored payload is the very line codex printed.
    compact = [
        json.dumps(e["payload"], separators=(",", ":"), ensure_ascii=False).encode() for e in events
    ]
    assert compact == lines
    result = shown["result"]
    assert result["final_message"] == "Done: wrote hello.txt"
    assert (result["usage"]["input_tokens"], result["usage"]["output_tokens"]) == (140, 50)


@pytest.mark.timeout(90)
def test_two_codex_tasks_run_in_parallel(tmp_path: Path, server: ModelServer) -> None:
    """Two tasks on two workers overlap in time; each follows its own script in its own dir."""
    names = ["alpha", "bravo"]
    for name in names:
        # The sleep keeps both runs alive long enough to overlap despite enqueue latency.
        server.route(
            f"[job-{name}]",
            [server.shell(f"echo {name} > {name}.txt && sleep 1"), server.message(f"Done {name}")],
        )
    dirs = {name: workdir(tmp_path, name) for name in names}
    with running_fleet("--workers", "2", env=fleet_env(tmp_path, server)) as fleet:
        tasks = {
            name: enqueue_codex(fleet, f"[job-{name}] write {name}.txt", dirs[name])
            for name in names
        }
        shown = {name: fleet.wait_state(task, *TERMINAL) for name, task in tasks.items()}
        events = {name: fleet.events(task) for name, task in tasks.items()}
    assert not [pid for d in dirs.values() for pid in processes_under(d)], "outlived the fleet"

    for name in names:
        view = shown[name]
        assert view["state"] == "succeeded", view
        assert view["result"]["final_message"] == f"Done {name}"
        assert view["result"]["commands"] == 1
        assert (dirs[name] / f"{name}.txt").read_text() == f"{name}\n"
        assert sorted(p.name for p in dirs[name].iterdir()) == [f"{name}.txt"]
        assert_stored_in_order(events[name])
        messages = [
            e["payload"]["item"]["text"]
            for e in events[name]
            if e["type"] == "item.completed" and e["payload"]["item"]["type"] == "agent_message"
        ]
        assert messages == [f"Done {name}"]
        assert [r.route for r in server.requests].count(f"[job-{name}]") == 2
    assert len(server.requests) == 4

    first, second = (shown[name]["executions"][0] for name in names)
    assert first["worker"] != second["worker"]
    assert when(first["started_at"]) < when(second["finished_at"])
    assert when(second["started_at"]) < when(first["finished_at"]), "the runs did not overlap"
    all_events = events["alpha"] + events["bravo"]
    assert len({e["execution"] for e in all_events}) == 2


@pytest.mark.timeout(90)
def test_http_500_is_retried_and_the_task_succeeds(tmp_path: Path, server: ModelServer) -> None:
    """A server error makes codex fail its turn: a transient failure, retried after a backoff."""
    server.script([server.http_error(500, "boom"), server.message("Done after a retry")])
    work = workdir(tmp_path, "work")
    env = {**fleet_env(tmp_path, server), "FLEET_QUEUE_RETRY_BACKOFF_SECONDS": "0.2"}
    with running_fleet("--workers", "2", env=env) as fleet:
        task = enqueue_codex(fleet, "anything", work)
        shown = fleet.wait_state(task, "succeeded", "failed", "cancelled", "timed_out")
        events = fleet.events(task)
    assert not processes_under(work), "codex processes outlived the fleet"

    assert shown["state"] == "succeeded", shown
    assert shown["attempts"] == 2
    first, second = shown["executions"]
    assert first["outcome"] == "failed" and second["outcome"] == "succeeded"
    failed = [e for e in events if e["execution"] == first["id"]]
    assert_stored_in_order(failed)
    assert failed[-1]["type"] == "turn.failed"
    message = failed[-1]["payload"]["error"]["message"]
    assert message
    result = first["result"]
    assert result["exit_code"] == 1
    assert result["error"] == message
    assert result["failure_class"] == "transient"
    assert result.get("final_message") is None
    assert second["result"]["final_message"] == "Done after a retry"
    assert len(server.requests) == 2


@pytest.mark.timeout(90)
def test_http_401_fails_the_task_at_once(tmp_path: Path, server: ModelServer) -> None:
    """Bad credentials are a permanent failure: no retry, and the reason says what to check."""
    server.script([server.http_error(401, "bad key")] * 3)
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "2", env=fleet_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "anything", work)
        shown = fleet.wait_state(task, *TERMINAL)
        human = fleet.ctl("show", str(task)).stdout
    assert shown["state"] == "failed", shown
    assert shown["attempts"] == 1 and len(shown["executions"]) == 1
    assert shown["result"]["failure_class"] == "permanent"
    assert shown["result"]["reason"].startswith("HTTP 401 Unauthorized from the model provider")
    assert "failed (permanent: HTTP 401 Unauthorized" in human
    assert len(server.requests) == 1
