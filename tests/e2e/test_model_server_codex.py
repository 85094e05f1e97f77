"""The real Codex CLI against the scripted loopback `ModelServer`."""

from __future__ import annotations

import os
import random
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.codex_env import (
    CodexRun,
    codex_argv,
    codex_env,
    config_overrides,
    kill_group,
    make_codex_home,
    parse_events,
    run_codex,
    spawn_codex,
)
from tests.support.fleet import wait_for
from tests.support.model_server import ModelServer, function_call_outputs
from tests.support.procs import processes_naming
from tests.support.requires import needs_codex

pytestmark = needs_codex()


def workspace(tmp_path: Path, server: ModelServer, name: str = "run") -> tuple[Path, Path]:
    """Create a private CODEX_HOME and an empty working directory; return both."""
    home = make_codex_home(tmp_path / name / "home", server.base_url)
    cwd = tmp_path / name / "work"
    cwd.mkdir()
    return home, cwd


def run_prompt(tmp_path: Path, server: ModelServer, prompt: str, name: str = "run") -> CodexRun:
    """Run one `codex exec` in a fresh home and working directory."""
    home, cwd = workspace(tmp_path, server, name)
    return run_codex(codex_argv(prompt, cwd), codex_env(home))


def assert_success(run: CodexRun, message: str) -> None:
    """Check a run that executed one command successfully, then answered `message`."""
    assert run.returncode == 0, run.stderr
    assert run.types()[0] == "thread.started"
    assert run.types()[-1] == "turn.completed"
    [command] = run.completed_items("command_execution")
    assert command["exit_code"] == 0
    assert command["status"] == "completed"
    assert [m["text"] for m in run.completed_items("agent_message")] == [message]
    usage = run.events[-1]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (40, 20), "sum of both replies"


@pytest.mark.timeout(60)
def test_shell_command_then_message(tmp_path: Path, server: ModelServer) -> None:
    """The model runs `exec_command`, gets its output back, then ends the turn."""
    server.script(
        [server.shell("echo hello > hello.txt", call_id="call_hello"), server.message("Done")]
    )
    run = run_prompt(tmp_path, server, "create hello.txt")

    assert_success(run, "Done")
    assert (tmp_path / "run" / "work" / "hello.txt").read_text() == "hello\n"
    assert [r.path for r in server.requests] == ["/v1/responses", "/v1/responses"]
    assert all(r.headers["authorization"] == "Bearer sk-test" for r in server.requests)
    [output] = function_call_outputs(server.requests[1].body)
    assert output["call_id"] == "call_hello"


@pytest.mark.timeout(60)
def test_http_500_fails_the_turn_without_retry(tmp_path: Path, server: ModelServer) -> None:
    """A server error ends the run with `turn.failed` and exit status 1."""
    server.script([server.http_error(500, "boom")])
    run = run_prompt(tmp_path, server, "anything")

    assert run.returncode == 1
    assert run.types()[-1] == "turn.failed"
    assert run.events[-1]["error"]["message"]
    assert len(server.requests) == 1


@pytest.mark.timeout(60)
def test_http_401_fails_the_turn_quickly(tmp_path: Path, server: ModelServer) -> None:
    """A rejected key ends the run fast when retries are off."""
    server.script([server.http_error(401, "bad key")])
    run = run_prompt(tmp_path, server, "anything")

    assert run.returncode == 1
    assert run.types()[-1] == "turn.failed"
    assert "401" in run.events[-1]["error"]["message"]
    assert run.seconds < 10
    assert len(server.requests) == 1


@pytest.mark.timeout(60)
def test_parallel_runs_get_their_own_scripts(tmp_path: Path, server: ModelServer) -> None:
    """Four concurrent runs with distinct prompts each follow their own route."""
    names = ["alpha", "bravo", "charlie", "delta"]
    for name in names:
        server.route(
            f"[job-{name}]",
            [server.shell(f"echo {name} > {name}.txt"), server.message(f"Done {name}")],
        )

    def run(name: str) -> CodexRun:
        return run_prompt(tmp_path, server, f"[job-{name}] write {name}.txt", name)

    with ThreadPoolExecutor(len(names)) as pool:
        runs = dict(zip(names, pool.map(run, names), strict=True))

    for name, result in runs.items():
        assert_success(result, f"Done {name}")
        assert (tmp_path / name / "work" / f"{name}.txt").read_text() == f"{name}\n"
        assert [r.route for r in server.requests].count(f"[job-{name}]") == 2
    assert len(server.requests) == 2 * len(names)


@pytest.mark.timeout(60)
def test_config_flags_equal_config_toml(tmp_path: Path, server: ModelServer) -> None:
    """The documented `-c` flags work with an empty CODEX_HOME."""
    server.script([server.shell("echo hi > hi.txt"), server.message("Done")])
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    argv = codex_argv("say hi", cwd)
    argv[2:2] = ["--strict-config", *config_overrides(server.base_url)]
    run = run_codex(argv, codex_env(home))

    assert_success(run, "Done")
    assert (cwd / "hi.txt").read_text() == "hi\n"


@pytest.mark.timeout(60)
def test_sigterm_ends_codex_and_its_command(tmp_path: Path, server: ModelServer) -> None:
    """SIGTERM kills codex (no final event) and the sandboxed command goes with it."""
    marker = f"3000.{random.randrange(10**6):06d}"
    server.script([server.shell(f"sleep {marker}")])
    home, cwd = workspace(tmp_path, server)
    proc = spawn_codex(codex_argv("sleep", cwd), codex_env(home))
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline()]
        while '"item.started"' not in lines[-1] and lines[-1]:
            lines.append(proc.stdout.readline())
        assert processes_naming(marker), "the sleep command never started"
        os.kill(proc.pid, signal.SIGTERM)
        rest, _ = proc.communicate(timeout=10)
    finally:
        kill_group(proc)

    assert proc.returncode == -signal.SIGTERM
    assert parse_events("".join(lines) + rest)[-1]["type"] == "item.started"
    wait_for(lambda: not processes_naming(marker), 5, what="the sleep command to end")
