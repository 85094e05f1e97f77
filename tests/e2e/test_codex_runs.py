"""Real Codex runs under fleetd: private homes, a gateway provider, secrets, timeouts, cancel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.codex_env import API_KEY_ENV, codex_binary
from tests.support.codex_fleet import (
    API_KEY,
    MODEL,
    TERMINAL,
    enqueue_codex,
    files_containing,
    fleet_env,
    workdir,
)
from tests.support.fleet import running_fleet, wait_for
from tests.support.gitrepo import new_repo, run_git
from tests.support.model_server import ModelServer
from tests.support.procs import processes_under
from tests.support.requires import needs_codex

# The same cases under both ways of driving Codex (codex.mode exec and app-server).
pytestmark = [*needs_codex(), pytest.mark.usefixtures("codex_mode")]


@pytest.mark.timeout(120)
def test_parallel_runs_each_get_a_private_codex_home(tmp_path: Path, server: ModelServer) -> None:
    """Four runs at once: each its own CODEX_HOME, its session kept; the host's home untouched."""
    names = ["one", "two", "three", "four"]
    for name in names:
        server.route(
            f"[job-{name}]",
            [
                server.shell(f"echo {name} > {name}.txt && sleep 0.5"),
                server.message(f"Done {name}"),
            ],
        )
    env = fleet_env(tmp_path, server)
    host_home = Path(env["CODEX_HOME"])
    host_before = sorted(p.name for p in host_home.iterdir())
    dirs = {name: workdir(tmp_path, name) for name in names}
    with running_fleet("--workers", "4", env=env) as fleet:
        tasks = {n: enqueue_codex(fleet, f"[job-{n}] write {n}.txt", dirs[n]) for n in names}
        shown = {n: fleet.wait_state(t, *TERMINAL, timeout=60) for n, t in tasks.items()}
        homes_left = sorted((fleet.state_dir / "codex-homes").iterdir())
        session_texts = {n: Path(shown[n]["result"]["session_file"]).read_text() for n in names}
    assert sorted(p.name for p in host_home.iterdir()) == host_before, "codex wrote the host home"
    assert homes_left == [], "private homes are removed after their runs"
    sessions = set()
    for name in names:
        result = shown[name]["result"]
        assert shown[name]["state"] == "succeeded", shown[name]
        assert (dirs[name] / f"{name}.txt").read_text() == f"{name}\n"
        session = Path(result["session_file"])
        assert result["thread_id"] in session.name
        assert session.parent.name == str(shown[name]["executions"][0]["id"])
        text = session_texts[name]
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert any(f"[job-{name}]" in json.dumps(line) for line in lines)
        sessions.add(session)
    assert len(sessions) == 4
    executions = [shown[n]["executions"][0] for n in names]
    assert len({e["worker"] for e in executions}) == 4, "all four ran at once on four workers"


@pytest.mark.timeout(90)
def test_gateway_provider_from_fleet_config(tmp_path: Path, server: ModelServer) -> None:
    """The provider comes from fleetd's own settings; the host's config.toml names none."""
    server.script([server.message("via the gateway")])
    home = tmp_path / "plain-home"
    home.mkdir()
    # Only what keeps codex off the network; no provider here.
    (home / "config.toml").write_text(
        "[features]\nplugins = false\n\n[analytics]\nenabled = false\n"
    )
    env = {
        **os.environ,
        "CODEX_HOME": str(home),
        "FLEET_CODEX_BIN": str(codex_binary()),
        "GATEWAY_TOKEN": API_KEY,
        "FLEET_WORKER_ENV_ALLOW": "PATH,HOME,GATEWAY_TOKEN,CODEX_HOME",
        "FLEET_WORKER_SECRET_ENV": "GATEWAY_TOKEN",
        "FLEET_CODEX_PROVIDER_BASE_URL": server.base_url,
        "FLEET_CODEX_PROVIDER_ENV_KEY": "GATEWAY_TOKEN",
    }
    env.pop(API_KEY_ENV, None)
    env.pop("OPENAI_API_KEY", None)
    with running_fleet("--workers", "1", env=env) as fleet:
        assert fleet.json("status")["warnings"] == []
        task = enqueue_codex(fleet, "say hi", workdir(tmp_path, "work"))
        shown = fleet.wait_state(task, *TERMINAL, timeout=60)
    assert shown["state"] == "succeeded", shown
    assert shown["result"]["final_message"] == "via the gateway"
    assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {API_KEY}"]


@pytest.mark.timeout(90)
def test_a_secret_the_agent_prints_is_stored_nowhere(tmp_path: Path, server: ModelServer) -> None:
    """Codex runs a command that echoes the API key: every copy fleet keeps or prints is masked."""
    server.script([server.shell(f"echo the key is {API_KEY}"), server.message(f"key={API_KEY}")])
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=fleet_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "print the key", work)
        shown = fleet.wait_state(task, *TERMINAL, timeout=60)
        outputs = [
            fleet.ctl(*args).stdout
            for args in (
                ("show", str(task)),
                ("show", str(task), "--json"),
                ("events", str(task)),
                ("events", str(task), "--json"),
                ("list",),
                ("list", "--json"),
                ("status", "--json"),
            )
        ]
        stored = files_containing(fleet.state_dir, API_KEY.encode())
        session = Path(shown["result"]["session_file"]).read_bytes()
        log = fleet.log()
    assert shown["state"] == "succeeded", shown
    assert "the key is [REDACTED]" in outputs[2]
    assert shown["result"]["final_message"] == "key=[REDACTED]"
    assert session.count(b"[REDACTED]") >= 2
    assert stored == [], f"the key was written to {stored}"
    assert API_KEY not in log
    assert [o for o in outputs if API_KEY in o] == []


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_hanging_command_is_cut_and_leaves_no_process(
    tmp_path: Path, server: ModelServer, how: str
) -> None:
    """Codex runs `sleep 300`; the wall-clock timeout (or cancel) ends codex and the sleep."""
    server.script([server.shell("sleep 300", yield_time_ms=600_000)])
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=fleet_env(tmp_path, server)) as fleet:
        limit = ["--timeout", "3"] if how == "timeout" else []
        task = enqueue_codex(fleet, "hang", work, *limit)
        wait_for(
            lambda: any(
                e["type"] in ("item.started", "item/started") and "sleep 300" in str(e["payload"])
                for e in fleet.events(task)
            ),
            30,
            what="codex to start sleep 300",
        )
        if how == "cancel":
            fleet.ctl("cancel", str(task))
        shown = fleet.wait_state(task, *TERMINAL, timeout=30)
        wait_for(lambda: not processes_under(work), 10, what="codex and its sleep to end")
    if how == "timeout":
        assert shown["state"] == "timed_out", shown
        assert shown["result"]["timeout_kind"] == "wall"
    else:
        assert shown["state"] == "cancelled", shown
        assert shown["result"]["reason"] == "cancelled by request"
    assert not processes_under(work)
    assert not processes_under(tmp_path)


def make_repo(path: Path) -> Path:
    return new_repo(path, {"app.py": "print('hello')\n"})


def git_show(repo: Path, what: str) -> str:
    return run_git(repo, "show", what)


@pytest.mark.timeout(120)
def test_codex_edit_in_a_repo_becomes_a_commit_on_the_tasks_branch(
    tmp_path: Path, server: ModelServer
) -> None:
    repo = make_repo(tmp_path / "repo")
    server.script(
        [
            server.shell("printf \"print('hello, fleet')\\n\" > app.py"),
            server.message("Changed the greeting"),
        ]
    )
    with running_fleet("--workers", "1", env=fleet_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "change the greeting", None, "--repo", str(repo))
        shown = fleet.wait_state(task, *TERMINAL, timeout=60)
        patch = fleet.ctl("diff", str(task)).stdout
    assert shown["state"] == "succeeded", shown
    workspace = shown["result"]["workspace"]
    assert workspace["branch"] == f"fleet/{task}"
    assert workspace["diff"]["files"] == [["app.py", 1, 1]]
    assert git_show(repo, f"fleet/{task}:app.py") == "print('hello, fleet')\n"
    assert git_show(repo, "main:app.py") == "print('hello')\n"
    assert "-print('hello')\n+print('hello, fleet')" in patch
    message = git_show(repo, f"fleet/{task}")
    assert "change the greeting" in message and "Changed the greeting" in message


@pytest.mark.timeout(180)
def test_four_tasks_on_two_workers_on_one_repo_make_four_branches(
    tmp_path: Path, server: ModelServer
) -> None:
    repo = make_repo(tmp_path / "repo")
    names = ["north", "south", "east", "west"]
    for name in names:
        server.route(
            f"[{name}]",
            [server.shell(f"echo {name} > {name}.txt"), server.message(f"wrote {name}")],
        )
    with running_fleet("--workers", "2", env=fleet_env(tmp_path, server)) as fleet:
        tasks = {
            n: enqueue_codex(fleet, f"[{n}] write {n}.txt", None, "--repo", str(repo))
            for n in names
        }
        shown = {n: fleet.wait_state(t, *TERMINAL, timeout=90) for n, t in tasks.items()}
    for name, task in tasks.items():
        assert shown[name]["state"] == "succeeded", shown[name]
        diff = shown[name]["result"]["workspace"]["diff"]
        assert diff["files"] == [[f"{name}.txt", 1, 0]], "each branch holds its own task's edit"
        assert git_show(repo, f"fleet/{task}:{name}.txt") == f"{name}\n"
    assert len({shown[n]["executions"][0]["worker"] for n in names}) == 2


@pytest.mark.timeout(150)
def test_retry_resume_continues_the_codex_thread_in_the_same_worktree(
    tmp_path: Path, server: ModelServer
) -> None:
    """Attempt 1 edits a file, then the provider refuses it (401, permanent); `retry --resume`
    continues the same Codex thread in the same worktree, and the commit holds both steps."""
    repo = make_repo(tmp_path / "repo")
    server.script(
        [
            server.shell("echo step1 > step1.txt"),
            server.http_error(401, "bad key"),
            server.shell("echo step2 > step2.txt"),
            server.message("finished both steps"),
        ]
    )
    with running_fleet("--workers", "1", env=fleet_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "[resume-me] do two steps", None, "--repo", str(repo))
        first = fleet.wait_state(task, *TERMINAL, timeout=60)
        assert first["state"] == "failed", first
        assert first["result"]["failure_class"] == "permanent"
        retried = fleet.json("retry", str(task), "--resume")
        assert retried["resume"] is True
        shown = fleet.wait_state(task, "succeeded", "failed", timeout=60)
        sessions = [Path(e["result"]["session_file"]) for e in shown["executions"]]
        assert all(path.is_file() for path in sessions)
    assert shown["state"] == "succeeded", shown
    one, two = shown["executions"]
    assert two["result"]["thread_id"] == one["result"]["thread_id"], "the same thread"
    assert two["result"]["final_message"] == "finished both steps"
    # The resumed request carries the first attempt's conversation.
    resumed = server.requests[2].body
    texts = json.dumps(resumed["input"])
    assert "[resume-me] do two steps" in texts and "interrupted" in texts
    files = sorted(f[0] for f in two["result"]["workspace"]["diff"]["files"])
    assert files == ["step1.txt", "step2.txt"], "the worktree was kept, not reset"
    assert git_show(repo, f"fleet/{task}:step1.txt") == "step1\n"


@pytest.mark.timeout(150)
def test_a_resumed_run_counts_its_own_tokens_not_the_whole_threads(
    tmp_path: Path, server: ModelServer
) -> None:
    """`turn.completed.usage` is the thread's running total (checked with codex 0.169.0: a
    resumed thread's first turn reports both runs' tokens), so each execution keeps only what
    its own run added, and the executions' tokens add up to the thread's total."""
    server.script([server.message("first", 20, 10), server.message("second", 20, 10)])
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=fleet_env(tmp_path, server)) as fleet:
        task = enqueue_codex(fleet, "say something", work)
        assert fleet.wait_state(task, *TERMINAL, timeout=60)["state"] == "succeeded"
        fleet.json("retry", str(task), "--resume")

        def resumed_ended() -> dict | None:
            shown = fleet.show(task)
            ended = len(shown["executions"]) == 2 and shown["state"] in TERMINAL
            return shown if ended else None

        shown = wait_for(resumed_ended, 60, what="the resumed attempt to end")
    assert shown["state"] == "succeeded", shown
    one, two = (e["result"]["usage"] for e in shown["executions"])
    assert (one["input_tokens"], one["output_tokens"], one["total_tokens"]) == (20, 10, 30)
    assert (two["input_tokens"], two["output_tokens"], two["total_tokens"]) == (20, 10, 30)
    assert shown["executions"][1]["result"]["thread_usage"]["total_tokens"] == 60


@pytest.mark.timeout(150)
def test_a_task_that_continues_another_resumes_its_thread_with_its_own_prompt(
    tmp_path: Path, server: ModelServer
) -> None:
    """`continues` (the tracker's review follow-ups): the second task's run resumes the first
    task's Codex thread, and what it asks is its own prompt, not the retry's 'go on'."""
    server.script([server.message("hello done"), server.message("goodbye done")])
    work = workdir(tmp_path, "work")
    with running_fleet("--workers", "1", env=fleet_env(tmp_path, server)) as fleet:
        first = enqueue_codex(fleet, "[first] say hello", work)
        assert fleet.wait_state(first, *TERMINAL, timeout=60)["state"] == "succeeded"
        spec = {
            "prompt": "[second] now say goodbye",
            "agent": "codex",
            "model": MODEL,
            "cwd": str(work),
            "continues": first,
        }
        line = (json.dumps(spec) + "\n").encode()
        second = int(fleet.ctl("enqueue", "--file", "-", input=line).stdout.split()[0])
        shown = fleet.wait_state(second, *TERMINAL, timeout=60)
        earlier = fleet.show(first)["executions"][0]["result"]["thread_id"]
    assert shown["state"] == "succeeded", shown
    assert shown["executions"][0]["result"]["thread_id"] == earlier, "the same thread"
    asked = json.dumps(server.requests[-1].body["input"])
    assert "[first] say hello" in asked and "[second] now say goodbye" in asked
    assert "interrupted" not in asked
