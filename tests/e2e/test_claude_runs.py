"""The real Claude Code CLI under a real fleetd, against the scripted Anthropic Messages
endpoint on 127.0.0.1 (tests/support/anthropic_server.py). Tasks go in and results come back
through `fleetctl` only."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.anthropic_server import AnthropicServer, tool_results
from tests.support.claude_env import (
    API_KEY,
    MODEL,
    claude_binary,
    claude_fleet_env,
    enqueue_claude,
)
from tests.support.codex_fleet import TERMINAL, files_containing, workdir
from tests.support.fleet import running_fleet, wait_for
from tests.support.procs import command_line, processes_under
from tests.support.requires import needs_claude

pytestmark = needs_claude()


@pytest.fixture
def anthropic() -> Iterator[AnthropicServer]:
    with AnthropicServer() as server:
        yield server


def payloads(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["payload"] for event in events]


def result_line(events: list[dict[str, Any]]) -> dict[str, Any]:
    [line] = [e["payload"] for e in events if e["type"] == "result"]
    return line


@pytest.mark.timeout(240)
def test_a_claude_task_runs_bash_and_records_its_stdout_usage_and_cost(
    tmp_path: Path, anthropic: AnthropicServer
) -> None:
    """Claude Code calls Bash to write a file, then answers; the task succeeds, its stored
    events are the CLI's stdout line for line, usage and cost are kept, the key nowhere."""
    truth = tmp_path / "claude-stdout.jsonl"
    wrapper = tmp_path / "claude-tee"
    wrapper.write_text(
        "#!/bin/bash\nset -o pipefail\n"
        f'{shlex.quote(str(claude_binary()))} "$@" | tee -a {shlex.quote(str(truth))}\n'
    )
    wrapper.chmod(0o755)
    anthropic.script(
        [anthropic.bash("echo hello > hello.txt"), anthropic.text("Done: wrote hello.txt", 100, 7)]
    )
    work = workdir(tmp_path, "work")
    env = {**claude_fleet_env(tmp_path, anthropic), "FLEET_CLAUDE_BIN": str(wrapper)}
    with running_fleet("--workers", "2", env=env) as fleet:
        task = enqueue_claude(fleet, "create hello.txt", work)
        shown = fleet.wait_state(task, *TERMINAL, timeout=120)
        events = fleet.events(task)
        human = fleet.ctl("show", str(task)).stdout
        leaks = files_containing(fleet.state_dir, API_KEY.encode())
        leaks += ["log"] if API_KEY in fleet.log() else []
        homes_left = list((fleet.state_dir / "claude-homes").iterdir())
    assert not processes_under(work), "claude outlived the fleet"

    assert shown["state"] == "succeeded", shown
    assert (work / "hello.txt").read_text() == "hello\n"
    lines = truth.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) > 3
    assert [e["seq"] for e in events] == list(range(1, len(lines)))
    assert all(e["flags"] == [] for e in events)
    assert payloads(events) == [json.loads(line) for line in lines[:-1]]
    assert [e["type"] for e in events][-1] == "result"

    result = shown["result"]
    final = result_line(events)
    assert result["final_message"] == "Done: wrote hello.txt" == final["result"]
    assert (result["usage"]["input_tokens"], result["usage"]["output_tokens"]) == (120, 17)
    assert result["cost_usd"] == pytest.approx(final["total_cost_usd"]) and result["cost_usd"] > 0
    assert result["turns"] == final["num_turns"] == 2
    assert result["thread_id"] == final["session_id"]
    assert result["commands"] == 1
    assert Path(result["session_file"]).name == f"{final['session_id']}.jsonl"
    assert "cost:" in human and "turns:" in human

    assert not leaks, f"API key written to {leaks}"
    assert homes_left == [], "the run's config directory is removed"
    messages = [r for r in anthropic.requests if r.path == "/v1/messages"]
    assert len(messages) == 2
    assert all(r.headers.get("x-api-key") == API_KEY for r in messages)
    assert all(r.body["model"] == MODEL for r in messages)
    [output] = tool_results(messages[1].body)
    assert output["is_error"] is False


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("name", "failure_class", "words"),
    [
        ("429", "transient", "HTTP 429"),
        ("401", "permanent", "ANTHROPIC_API_KEY"),
        ("cut", "transient", "could not reach the model provider"),
    ],
)
def test_refused_and_cut_requests_are_classified(
    tmp_path: Path, anthropic: AnthropicServer, name: str, failure_class: str, words: str
) -> None:
    """A 429 arrives as `subtype: success, is_error: true` (anthropics/claude-code-action#1720):
    a transient failure, not a success; a 401 is permanent; a stream cut short is transient."""
    turn = {
        "429": anthropic.http_error(429, "rate_limit_error", "Too many requests", retry_after="0"),
        "401": anthropic.http_error(401, "authentication_error", "invalid x-api-key"),
        "cut": anthropic.cut_stream(),
    }[name]
    anthropic.script([turn] * 6)
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=claude_fleet_env(tmp_path, anthropic)) as fleet:
        task = enqueue_claude(fleet, "anything", work, "--max-attempts", "1")
        shown = fleet.wait_state(task, *TERMINAL, timeout=120)
        events = fleet.events(task)
    assert shown["state"] == "failed", shown
    result = shown["result"]
    assert (result["failure_class"], words in result["reason"]) == (failure_class, True), result
    final = result_line(events)
    assert final["is_error"] is True and final["subtype"] == "success"
    assert result.get("final_message") is None
    assert any(e["type"] == "system" and e["payload"]["subtype"] == "api_retry" for e in events)


def command_running(work: Path) -> bool:
    """The Bash tool's `tail` runs (in a process group of its own, not claude's)."""
    return any("tail -f /dev/null" in command_line(pid) for pid in processes_under(work))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_timeout_and_cancel_end_claudes_process_group(
    tmp_path: Path, anthropic: AnthropicServer, how: str
) -> None:
    """Claude Code runs a command that never ends; the timeout (or cancel) ends both."""
    anthropic.script([anthropic.bash("tail -f /dev/null")])
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=claude_fleet_env(tmp_path, anthropic)) as fleet:
        limit = ["--timeout", "20"] if how == "timeout" else []
        task = enqueue_claude(fleet, "hang", work, *limit)
        wait_for(lambda: command_running(work), 60, what="claude's Bash to start tail")
        if how == "cancel":
            fleet.ctl("cancel", str(task))
        shown = fleet.wait_state(task, *TERMINAL, timeout=60)
        wait_for(lambda: not processes_under(work), 10, what="claude and its sleep to end")
    expected = "timed_out" if how == "timeout" else "cancelled"
    assert shown["state"] == expected, shown
    assert not processes_under(tmp_path)


@pytest.mark.timeout(300)
def test_parallel_runs_do_not_share_a_config_directory(
    tmp_path: Path, anthropic: AnthropicServer
) -> None:
    """Two runs at once each see their own CLAUDE_CONFIG_DIR; both are removed, the host's
    settings directory is left as it was, and each run's session is kept apart."""
    names = ["alpha", "bravo"]
    for name in names:
        anthropic.route(
            f"[job-{name}]",
            [
                anthropic.bash(f'echo "$CLAUDE_CONFIG_DIR" > {name}.txt && sleep 1'),
                anthropic.text(f"Done {name}"),
            ],
        )
    env = claude_fleet_env(tmp_path, anthropic)
    host_dir = Path(env["CLAUDE_CONFIG_DIR"])
    dirs = {name: workdir(tmp_path, name) for name in names}
    with running_fleet("--workers", "2", env=env) as fleet:
        tasks = {n: enqueue_claude(fleet, f"[job-{n}] go", dirs[n]) for n in names}
        shown = {n: fleet.wait_state(t, *TERMINAL, timeout=150) for n, t in tasks.items()}
        homes_left = list((fleet.state_dir / "claude-homes").iterdir())
        sessions = {n: Path(shown[n]["result"]["session_file"]).read_text() for n in names}
    assert all(view["state"] == "succeeded" for view in shown.values()), shown
    used = {n: (dirs[n] / f"{n}.txt").read_text().strip() for n in names}
    assert used["alpha"] != used["bravo"]
    assert all(Path(path).parent.name == "claude-homes" for path in used.values())
    assert homes_left == [] and list(host_dir.iterdir()) == []
    for name, other in (names, names[::-1]):
        assert f"[job-{name}]" in sessions[name] and f"[job-{other}]" not in sessions[name]


@pytest.mark.timeout(300)
def test_retry_resume_continues_the_claude_session(
    tmp_path: Path, anthropic: AnthropicServer
) -> None:
    """Attempt 1 runs a command, then the endpoint refuses the key (401, permanent); `retry
    --resume` starts Claude Code with `--resume SESSION` from the kept transcript."""
    anthropic.script(
        [
            anthropic.bash("echo step1 > step1.txt"),
            anthropic.http_error(401, "authentication_error", "invalid x-api-key"),
            anthropic.http_error(401, "authentication_error", "invalid x-api-key"),
            anthropic.bash("echo step2 > step2.txt"),
            anthropic.text("finished both steps"),
        ]
    )
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=claude_fleet_env(tmp_path, anthropic)) as fleet:
        task = enqueue_claude(fleet, "[resume-me] do two steps", work)
        first = fleet.wait_state(task, *TERMINAL, timeout=120)
        assert first["state"] == "failed", first
        assert first["result"]["failure_class"] == "permanent"
        retried = fleet.json("retry", str(task), "--resume")
        assert retried["resume"] is True
        shown = fleet.wait_state(task, "succeeded", "failed", timeout=120)
    assert shown["state"] == "succeeded", shown
    one, two = shown["executions"]
    assert two["result"]["thread_id"] == one["result"]["thread_id"], "the same session"
    assert two["result"]["final_message"] == "finished both steps"
    assert (work / "step1.txt").is_file() and (work / "step2.txt").is_file()
    resumed = json.dumps(anthropic.requests[-2].body["messages"])
    assert "[resume-me] do two steps" in resumed and "interrupted" in resumed
