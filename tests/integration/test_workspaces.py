"""Repository tasks through a real fleetd: worktrees, branches, diffs, hooks, gc."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import messages as m
from shared.models import TaskSpec
from tests.support.fleet import Fleet, running_fleet, wait_for
from tests.support.gitrepo import commit_all, new_repo
from tests.support.gitrepo import run_git as git
from tests.support.procs import processes_under

AGENT_MESSAGE = json.dumps(
    {"type": "item.completed", "item": {"type": "agent_message", "text": "done"}}
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit on `main` and a second branch `other`."""
    path = new_repo(tmp_path / "repo", {"readme.txt": "hello\n", "old.txt": "to be deleted\n"})
    git(path, "branch", "other")
    (path / "main-only.txt").write_text("x\n")
    commit_all(path, "second")
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    config = tmp_path / "fleet.toml"
    config.write_text(
        '[workspace]\nauthor_name = "Fleet Bot"\nauthor_email = "bot@fleet.test"\n'
        'after_create = "echo created > .seeded"\n'
    )
    with running_fleet("--workers", "2", "--config", str(config)) as started:
        yield started


def edit(script: str) -> list[str]:
    return ["--", "sh", "-c", f"{script}; echo '{AGENT_MESSAGE}'"]


def test_repo_task_commits_its_change_on_its_branch(fleet: Fleet, repo: Path) -> None:
    script = "echo world >> readme.txt && rm old.txt && printf 'new\\n' > new.txt"
    task = fleet.enqueue("tidy the repo", "--repo", str(repo), *edit(script))
    shown = fleet.wait_state(task, "succeeded", "failed")
    assert shown["state"] == "succeeded", shown
    workspace = shown["result"]["workspace"]
    assert workspace["branch"] == f"fleet/{task}"
    assert workspace["base"] == git(repo, "rev-parse", "main").strip()
    assert workspace["commit"] == git(repo, "rev-parse", f"fleet/{task}").strip()
    files = {path: (ins, dels) for path, ins, dels in workspace["diff"]["files"]}
    # .seeded came from the after_create hook: hooks prepare, and what they leave is work too.
    assert files == {"readme.txt": (1, 0), "old.txt": (0, 1), "new.txt": (1, 0), ".seeded": (1, 0)}
    assert (workspace["diff"]["insertions"], workspace["diff"]["deletions"]) == (3, 1)
    author = git(repo, "log", "-1", "--format=%an <%ae>%n%B", f"fleet/{task}")
    assert author.startswith("Fleet Bot <bot@fleet.test>\ntidy the repo\n")
    assert "done" in author, "the agent's final message is in the commit message"
    assert git(repo, "rev-parse", "main").strip() == workspace["base"], "main is untouched"

    patch = fleet.ctl("diff", str(task)).stdout
    assert "+world" in patch and "-to be deleted" in patch
    check = subprocess.run(
        ["git", "-C", str(repo), "apply", "--check", "-"], input=patch, text=True
    )
    assert check.returncode == 0, "the printed diff applies to the base"
    as_json = fleet.json("diff", str(task))
    assert as_json["commit"] == workspace["commit"] and as_json["patch"] == patch
    human = fleet.ctl("show", str(task)).stdout
    assert f"fleet/{task}" in human and workspace["commit"][:12] in human
    hook_events = [e for e in fleet.events(task) if e["type"] == "fleet.hook"]
    assert [(e["payload"]["hook"], e["payload"]["exit_code"]) for e in hook_events] == [
        ("after_create", 0)
    ]


def test_tasks_on_one_repo_get_their_own_worktrees_and_branches(fleet: Fleet, repo: Path) -> None:
    tasks = [
        fleet.enqueue(f"task {n}", "--repo", str(repo), *edit(f"echo {n} > mine.txt; sleep 0.5"))
        for n in range(4)
    ]
    tasks.append(fleet.enqueue("from other", "--repo", str(repo), "--ref", "other", *edit("ls")))
    shown = [fleet.wait_state(t, "succeeded", "failed") for t in tasks]
    assert [s["state"] for s in shown] == ["succeeded"] * 5
    paths = {s["result"]["workspace"]["path"] for s in shown}
    assert len(paths) == 5
    for n, task in enumerate(tasks[:4]):
        assert git(repo, "show", f"fleet/{task}:mine.txt") == f"{n}\n"
    other = shown[4]["result"]["workspace"]
    assert other["base"] == git(repo, "rev-parse", "other").strip()
    assert "main-only.txt" not in git(repo, "ls-tree", "--name-only", f"fleet/{tasks[4]}")


def test_unknown_ref_and_missing_repo_fail_with_the_reason(fleet: Fleet, repo: Path) -> None:
    bad_ref = fleet.enqueue("x", "--repo", str(repo), "--ref", "no-such-ref", *edit("true"))
    refused = fleet.ctl("enqueue", "x", "--repo", str(repo / "nope"), *edit("true"), check=False)
    assert refused.returncode == 2 and "does not exist" in refused.stderr  # checked at enqueue
    # A repository gone between enqueue and run (sent past fleetctl's check) fails the attempt.
    spec = TaskSpec(prompt="x", agent="command", argv=["true"], repo=str(repo / "nope"))
    reply = fleet.request(m.Enqueue(tasks=[spec]))
    assert isinstance(reply, m.Enqueued)
    [missing] = reply.ids
    for task, words in ((bad_ref, "no-such-ref"), (missing, "does not exist")):
        shown = fleet.wait_state(task, "failed", "succeeded")
        assert shown["state"] == "failed"
        assert words in shown["result"]["error"], shown["result"]


def test_failing_before_run_hook_fails_the_attempt_and_keeps_its_output(
    tmp_path: Path, repo: Path
) -> None:
    config = tmp_path / "hooks.toml"
    config.write_text(
        "[workspace]\n"
        "before_run = \"echo preparing; echo 'missing tool' >&2; exit 3\"\n"
        'after_run = "exit 1"\n'
        "[queue]\nmax_attempts = 1\n"
    )
    with running_fleet("--workers", "1", "--config", str(config)) as fleet:
        task = fleet.enqueue("x", "--repo", str(repo), *edit("touch ran"))
        shown = fleet.wait_state(task, "failed", "succeeded")
        events = fleet.events(task)
    assert shown["state"] == "failed"
    assert "before_run" in shown["result"]["error"]
    [hook] = [e["payload"] for e in events if e["type"] == "fleet.hook"]
    assert hook["hook"] == "before_run" and hook["exit_code"] == 3
    assert "preparing" in hook["output"] and "missing tool" in hook["output"]
    assert shown["executions"][0]["started_at"] is None, "the agent never started"


def test_cancel_during_a_slow_hook_ends_it(tmp_path: Path, repo: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text('[workspace]\nbefore_run = "sleep 300 & sleep 300; wait"\n')
    with running_fleet("--workers", "1", "--config", str(config)) as fleet:
        task = fleet.enqueue("x", "--repo", str(repo), *edit("true"))
        workspace = fleet.state_dir / "workspaces" / str(task)
        wait_for(lambda: processes_under(workspace), 20, what="the hook to start")
        fleet.ctl("cancel", str(task))
        shown = fleet.wait_state(task, "cancelled", "failed", "succeeded", timeout=20)
        wait_for(lambda: not processes_under(workspace), 10, what="the hook's processes to end")
    assert shown["state"] == "cancelled", shown


def test_gc_removes_finished_worktrees_and_keeps_branches(fleet: Fleet, repo: Path) -> None:
    done = fleet.enqueue("quick", "--repo", str(repo), *edit("echo a > a.txt"))
    fleet.wait_state(done, "succeeded")
    slow = fleet.enqueue("slow", "--repo", str(repo), *edit("sleep 300"))
    wait_for(lambda: fleet.show(slow)["executions"], what="the slow task to start")
    assert fleet.json("gc", "--older-than", "1") == {"removed": [], "busy": []}
    assert fleet.json("gc") == {"removed": [done], "busy": []}
    workspaces = fleet.state_dir / "workspaces"
    assert not (workspaces / str(done)).exists()
    assert (workspaces / str(slow)).is_dir(), "a running task keeps its worktree"
    assert git(repo, "show", f"fleet/{done}:a.txt") == "a\n", "the branch stays"
    assert fleet.ctl("diff", str(done)).stdout, "the patch stays too"
    fleet.ctl("cancel", str(slow))
    fleet.wait_state(slow, "cancelled")
    assert "removed 1 worktree(s): tasks " + str(slow) in fleet.ctl("gc").stdout


def test_diff_of_a_task_without_repo_says_why(fleet: Fleet) -> None:
    task = fleet.enqueue("x", *edit("true"))
    fleet.wait_state(task, "succeeded")
    result = fleet.ctl("diff", str(task), check=False)
    assert result.returncode == 1
    assert "ran without --repo" in result.stderr


def test_a_key_the_agent_writes_into_the_repo_is_masked_in_the_kept_patch(
    fleet: Fleet, repo: Path
) -> None:
    key = "sk-proj-" + "A1b2C3d4" * 4
    task = fleet.enqueue("leak", "--repo", str(repo), *edit(f"echo 'token={key}' > conf.txt"))
    fleet.wait_state(task, "succeeded")
    patch = fleet.ctl("diff", str(task)).stdout
    assert "+token=[REDACTED]" in patch
    assert key not in patch
    assert not any(key in p.read_text() for p in (fleet.state_dir / "diffs").iterdir())


def test_repo_by_url_is_cloned_once_and_the_branch_lives_in_the_clone(
    fleet: Fleet, repo: Path
) -> None:
    url = f"file://{repo}"
    tasks = [fleet.enqueue(f"t{n}", "--repo", url, *edit(f"echo {n} > n.txt")) for n in range(2)]
    shown = [fleet.wait_state(t, "succeeded", "failed") for t in tasks]
    assert [s["state"] for s in shown] == ["succeeded", "succeeded"], shown
    clones = [p for p in (fleet.state_dir / "repos").iterdir() if not p.name.startswith(".")]
    assert len(clones) == 1, "one clone serves both tasks"
    for n, task in enumerate(tasks):
        assert git(clones[0], "show", f"fleet/{task}:n.txt") == f"{n}\n"
    assert "fleet/" not in git(repo, "branch", "--list"), "the upstream repository is untouched"
