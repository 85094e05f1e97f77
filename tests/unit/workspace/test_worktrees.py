"""Workspaces against real git: temporary repositories, real hooks, real process groups."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetd.workspace.commands import Completed, GroupRunner
from fleetd.workspace.errors import HookFailed, WorkspaceAborted, WorkspaceError
from fleetd.workspace.git import clone_name, is_url, parse_numstat
from fleetd.workspace.worktrees import Workspaces, commit_message
from shared.config import WorkspaceConfig
from shared.models import FileChange
from shared.paths import StatePaths
from tests.support.fleet import wait_for
from tests.support.gitrepo import commit_all, run_git
from tests.support.procs import processes_under

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_leftovers")]

BINARY = bytes(range(256)) * 4
ROOT = Path(__file__).resolve().parents[3]


def git(repo: Path, *args: str) -> str:
    return run_git(repo, *args).strip()


def permissions_apply() -> bool:
    """Whether a read-only directory stops us (not so for root with CAP_DAC_OVERRIDE)."""
    with tempfile.TemporaryDirectory() as scratch:
        os.chmod(scratch, 0o500)
        try:
            Path(scratch, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(scratch, 0o700)
        return False


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with two commits on main (tag v1 on the first) and a branch `other`."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "a.txt").write_text("one\ntwo\nthree\n")
    (path / "gone.txt").write_text("x\ny\n")
    (path / ".gitignore").write_text("ignored/\n")
    commit_all(path, "first")
    git(path, "tag", "v1")
    git(path, "branch", "other")
    (path / "a.txt").write_text("one\ntwo\nthree\nfour\n")
    commit_all(path, "second")
    return path


@pytest.fixture
def make(tmp_path: Path) -> Callable[..., Workspaces]:
    """Workspaces in a temporary state directory; keyword arguments are [workspace] settings."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HOOK_LOG": str(tmp_path / "hooks")}

    def build(**settings: Any) -> Workspaces:
        return Workspaces(StatePaths(tmp_path / "state"), WorkspaceConfig(**settings), env)

    return build


def hook_log(tmp_path: Path) -> list[str]:
    log = tmp_path / "hooks"
    return log.read_text().split() if log.exists() else []


# -- prepare --------------------------------------------------------------------------------


def test_prepare_makes_a_worktree_on_the_task_branch_at_head(repo: Path, make: Any) -> None:
    ws = make()
    prepared = ws.prepare(7, str(repo), None)
    assert prepared.path == ws.paths.workspace(7)
    assert prepared.branch == "fleet/7"
    assert prepared.base == git(repo, "rev-parse", "main")
    assert prepared.created and prepared.hooks == []
    assert git(prepared.path, "symbolic-ref", "HEAD") == "refs/heads/fleet/7"
    assert (prepared.path / "a.txt").read_text().endswith("four\n")
    assert ws.existing() == [7]


@pytest.mark.parametrize("ref", ["v1", "other", "HEAD~1"])
def test_prepare_at_a_given_ref(repo: Path, make: Any, ref: str) -> None:
    prepared = make().prepare(1, str(repo), ref)
    assert prepared.base == git(repo, "rev-parse", "v1^{commit}")
    assert (prepared.path / "a.txt").read_text() == "one\ntwo\nthree\n"


def test_two_tasks_on_one_repo_get_two_worktrees(repo: Path, make: Any) -> None:
    ws = make()
    first, second = ws.prepare(1, str(repo), None), ws.prepare(2, str(repo), None)
    assert first.path != second.path
    (first.path / "a.txt").write_text("changed\n")
    assert (second.path / "a.txt").read_text().endswith("four\n")
    assert ws.existing() == [1, 2]


def test_unknown_ref_is_a_clear_error(repo: Path, make: Any) -> None:
    with pytest.raises(WorkspaceError, match="unknown ref 'nope'"):
        make().prepare(1, str(repo), "nope")
    assert not git(repo, "branch", "--list", "fleet/*")


@pytest.mark.parametrize("ref", ["--output=/tmp/x", "-b", "", "a b", "main\n"])
def test_option_like_or_malformed_refs_are_refused(repo: Path, make: Any, ref: str) -> None:
    with pytest.raises(WorkspaceError, match="invalid --ref"):
        make().prepare(1, str(repo), ref)


def test_not_a_repository_is_a_clear_error(tmp_path: Path, make: Any) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(WorkspaceError, match="is not a git repository"):
        make().prepare(1, str(plain), None)
    with pytest.raises(WorkspaceError, match="does not exist"):
        make().prepare(1, str(tmp_path / "missing"), None)
    with pytest.raises(WorkspaceError, match="must be absolute"):
        make().prepare(1, "relative/repo", None)


@pytest.mark.parametrize("repo", ["-uhack", "ext::sh -c touch% /tmp/pwned", "ftp://host/r.git"])
def test_hostile_or_unsupported_repos_are_refused(make: Any, repo: str) -> None:
    with pytest.raises(WorkspaceError):
        make().prepare(1, repo, None)


def test_repo_forms() -> None:
    for url in ("https://h/o/r.git", "ssh://git@h/o/r", "git@github.com:o/r.git", "file:///r"):
        assert is_url(url)
    assert not is_url("/srv/repos/r")
    assert clone_name("https://h/o/r.git").startswith("r-")
    assert clone_name("git@h:o/r.git") != clone_name("https://h/o/r.git")
    assert clone_name("https://h/..").startswith("repo-")  # never "..", never hidden


@pytest.mark.parametrize("task", [-1, True, "1"])
def test_task_ids_outside_the_workspaces_are_refused(repo: Path, make: Any, task: Any) -> None:
    with pytest.raises(WorkspaceError, match="invalid task id"):
        make().prepare(task, str(repo), None)


def test_a_symlink_at_the_worktree_path_is_not_followed(
    repo: Path, make: Any, tmp_path: Path
) -> None:
    ws = make()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine\n")
    ws.paths.workspaces_dir.mkdir(parents=True)
    ws.paths.workspace(1).symlink_to(outside)
    with pytest.raises(WorkspaceError, match="symbolic link"):
        ws.prepare(1, str(repo), None)
    with pytest.raises(WorkspaceError, match="symbolic link"):
        ws.remove(1)
    assert (outside / "keep.txt").read_text() == "mine\n"


def test_a_branch_this_fleet_did_not_make_is_not_clobbered(repo: Path, make: Any) -> None:
    git(repo, "branch", "fleet/3", "v1")
    with pytest.raises(WorkspaceError, match="already exists"):
        make().prepare(3, str(repo), None)
    assert git(repo, "rev-parse", "fleet/3") == git(repo, "rev-parse", "v1^{commit}")


# -- collect --------------------------------------------------------------------------------


def test_collect_commits_changes_and_summarises_the_diff(repo: Path, make: Any) -> None:
    ws = make(author_name="Fleet Bot", author_email="bot@fleet.example")
    prepared = ws.prepare(1, str(repo), None)
    (prepared.path / "a.txt").write_text("one\nTWO\nthree\nfour\nfive\n")  # +2 -1
    (prepared.path / "gone.txt").unlink()  # -2
    (prepared.path / "logo.bin").write_bytes(BINARY)
    (prepared.path / "new dir").mkdir()
    (prepared.path / "new dir" / "n.txt").write_text("n\n")  # +1
    (prepared.path / "ignored").mkdir()
    (prepared.path / "ignored" / "junk").write_text("not committed\n")
    result, hooks = ws.commit(1, prepared, commit_message(1, "Fix it\nplease", "Done."))

    assert hooks == []
    assert result.commit == git(repo, "rev-parse", "fleet/1")
    assert (result.branch, result.base, result.path) == (
        "fleet/1",
        prepared.base,
        str(prepared.path),
    )
    assert sorted(result.diff.files, key=lambda f: f.path) == [
        FileChange(path="a.txt", insertions=2, deletions=1),
        FileChange(path="gone.txt", insertions=0, deletions=2),
        FileChange(path="logo.bin", insertions=None, deletions=None),
        FileChange(path="new dir/n.txt", insertions=1, deletions=0),
    ]
    assert (result.diff.insertions, result.diff.deletions) == (3, 3)
    who = git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s|%b", "fleet/1")
    assert who.startswith("Fleet Bot <bot@fleet.example>|Fleet Bot <bot@fleet.example>|Fix it|")
    assert "Done." in who and "Agent-Fleet-Task: 1" in who
    assert git(repo, "status", "--porcelain") == ""  # the user's own checkout is untouched


def test_the_patch_file_applies_to_the_base(repo: Path, make: Any, tmp_path: Path) -> None:
    ws = make()
    prepared = ws.prepare(1, str(repo), None)
    (prepared.path / "a.txt").write_text("rewritten\n")
    (prepared.path / "gone.txt").unlink()
    (prepared.path / "logo.bin").write_bytes(BINARY)
    result, _ = ws.commit(1, prepared, "change")
    assert result.patch_file and Path(result.patch_file).parent == ws.paths.diffs_dir

    check = tmp_path / "check"
    git(repo, "worktree", "add", "-q", "--detach", str(check), prepared.base)
    git(check, "apply", "--index", result.patch_file)
    assert git(check, "write-tree") == git(repo, "rev-parse", f"{result.commit}^{{tree}}")
    git(repo, "worktree", "remove", "--force", str(check))


def test_nothing_changed_gives_no_commit(repo: Path, make: Any) -> None:
    ws = make()
    prepared = ws.prepare(1, str(repo), None)
    (prepared.path / "ignored").mkdir()
    (prepared.path / "ignored" / "junk").write_text("ignored files are not work\n")
    result, _ = ws.commit(1, prepared, "nothing")
    assert result.commit is None and result.patch_file is None
    assert result.diff.files == [] and (result.diff.insertions, result.diff.deletions) == (0, 0)
    assert git(repo, "rev-parse", "fleet/1") == prepared.base


def test_commits_the_agent_made_itself_count(repo: Path, make: Any) -> None:
    ws = make()
    prepared = ws.prepare(1, str(repo), None)
    (prepared.path / "b.txt").write_text("b\n")
    own = commit_all(prepared.path, "agent's own commit")
    result, _ = ws.commit(1, prepared, "unused")
    assert result.commit == own
    assert result.diff.files == [FileChange(path="b.txt", insertions=1, deletions=0)]


def test_work_lands_on_the_task_branch_even_if_the_agent_switched(repo: Path, make: Any) -> None:
    ws = make()
    prepared = ws.prepare(1, str(repo), None)
    git(prepared.path, "checkout", "-q", "-b", "elsewhere")
    (prepared.path / "b.txt").write_text("b\n")
    result, _ = ws.commit(1, prepared, "switched")
    assert result.commit == git(repo, "rev-parse", "fleet/1")
    assert git(repo, "show", "fleet/1:b.txt") == "b"


def test_no_repo_hook_signing_or_host_identity_is_used(
    repo: Path, make: Any, tmp_path: Path
) -> None:
    hooks = tmp_path / "repo-hooks"
    hooks.mkdir()
    for name in ("post-checkout", "pre-commit", "commit-msg", "reference-transaction"):
        (hooks / name).write_text(f"#!/bin/sh\ntouch {tmp_path}/hook-ran\nexit 1\n")
        (hooks / name).chmod(0o755)
    git(repo, "config", "core.hooksPath", str(hooks))
    git(repo, "config", "commit.gpgSign", "true")
    (tmp_path / ".gitconfig").write_text("[user]\n\tname = Host Person\n\tuseConfigOnly = true\n")
    ws = make()
    prepared = ws.prepare(1, str(repo), None)
    (prepared.path / "b.txt").write_text("b\n")
    result, _ = ws.commit(1, prepared, "no hooks")
    assert result.commit is not None
    assert git(repo, "log", "-1", "--format=%an|%cn", "fleet/1") == "agent-fleet|agent-fleet"
    assert not (tmp_path / "hook-ran").exists()


# -- retries --------------------------------------------------------------------------------


def test_retry_fresh_resets_to_the_base(repo: Path, make: Any, tmp_path: Path) -> None:
    ws = make(after_create='echo create >> "$HOOK_LOG"')
    first = ws.prepare(1, str(repo), None)
    (first.path / "a.txt").write_text("half done\n")
    (first.path / "untracked.txt").write_text("u\n")
    (first.path / "ignored").mkdir()
    ws.commit(1, first, "attempt 1")
    git(repo, "commit", "-q", "--allow-empty", "-m", "main moves on")

    again = ws.prepare(1, str(repo), None, fresh=True)
    assert again.base == first.base  # the same starting point, not main's new head
    assert again.created and hook_log(tmp_path) == ["create", "create"]
    assert git(again.path, "rev-parse", "HEAD") == first.base
    assert git(again.path, "status", "--porcelain", "--ignored") == ""
    assert (again.path / "a.txt").read_text().endswith("four\n")


@pytest.mark.skipif(not permissions_apply(), reason="this user ignores file permissions (root)")
def test_read_only_leftovers_do_not_stop_a_retry_or_a_removal(repo: Path, make: Any) -> None:
    ws = make()
    first = ws.prepare(1, str(repo), None)
    locked = first.path / "locked" / "deeper"
    locked.mkdir(parents=True)
    (locked / "file").write_text("x\n")
    locked.chmod(0o500)
    (first.path / "locked").chmod(0o500)
    again = ws.prepare(1, str(repo), None, fresh=True)
    assert not (again.path / "locked").exists()
    (again.path / "locked").mkdir()
    (again.path / "locked").chmod(0o500)
    ws.remove(1)
    assert not again.path.exists()


def test_retry_not_fresh_keeps_everything(repo: Path, make: Any, tmp_path: Path) -> None:
    ws = make(after_create='echo create >> "$HOOK_LOG"', before_run='echo run >> "$HOOK_LOG"')
    first = ws.prepare(1, str(repo), None)
    (first.path / "a.txt").write_text("half done\n")
    again = ws.prepare(1, str(repo), None, fresh=False)
    assert not again.created and again.base == first.base
    assert [hook.name for hook in again.hooks] == ["before_run"]
    assert hook_log(tmp_path) == ["create", "run", "run"]
    assert (again.path / "a.txt").read_text() == "half done\n"


def test_a_worktree_deleted_behind_our_back_is_made_again(repo: Path, make: Any) -> None:
    ws = make()
    first = ws.prepare(1, str(repo), None)
    subprocess.run(["rm", "-rf", str(first.path)], check=True, timeout=30)
    again = ws.prepare(1, str(repo), None)
    assert again.created and again.base == first.base
    assert git(again.path, "symbolic-ref", "HEAD") == "refs/heads/fleet/1"


# -- hooks ----------------------------------------------------------------------------------


def test_after_create_only_on_creation_and_before_run_each_time(repo: Path, make: Any) -> None:
    ws = make(
        after_create="echo created $AGENT_FLEET_TASK", before_run="echo run $AGENT_FLEET_BRANCH"
    )
    first = ws.prepare(4, str(repo), None)
    assert [(h.name, h.output, h.exit_code) for h in first.hooks] == [
        ("after_create", b"created 4\n", 0),
        ("before_run", b"run fleet/4\n", 0),
    ]
    again = ws.prepare(4, str(repo), None, fresh=False)
    assert [h.name for h in again.hooks] == ["before_run"]


def test_hooks_run_in_the_worktree_with_the_task_env(repo: Path, make: Any) -> None:
    ws = make(before_run='pwd; echo "$AGENT_FLEET_TASK $AGENT_FLEET_WORKSPACE $HOOK_LOG"')
    prepared = ws.prepare(5, str(repo), None)
    cwd, env_line = prepared.hooks[0].output.decode().splitlines()
    assert Path(cwd) == prepared.path
    assert env_line == f"5 {prepared.path} {ws.env['HOOK_LOG']}"


def test_failing_before_run_raises_with_its_output(repo: Path, make: Any) -> None:
    ws = make(after_create="echo setting up", before_run="echo boom >&2; echo out; exit 3")
    with pytest.raises(HookFailed, match="before_run failed with exit code 3") as caught:
        ws.prepare(1, str(repo), None)
    runs = caught.value.hooks
    assert [(h.name, h.ok) for h in runs] == [("after_create", True), ("before_run", False)]
    assert runs[1].exit_code == 3 and runs[1].output == b"boom\nout\n"


def test_failing_after_run_is_ignored_but_returned(repo: Path, make: Any) -> None:
    ws = make(after_run="echo cleanup failed; exit 9")
    prepared = ws.prepare(1, str(repo), None)
    (prepared.path / "b.txt").write_text("b\n")
    result, hooks = ws.commit(1, prepared, "work")
    assert result.commit is not None
    assert [(h.name, h.exit_code, h.output) for h in hooks] == [
        ("after_run", 9, b"cleanup failed\n")
    ]


def none_left(directory: Path) -> None:
    """No process of the test's is left; a SIGKILLed one may take a moment to be gone."""
    wait_for(lambda: processes_under(directory) == [], 5, what="the hook's processes to end")


def test_hook_output_keeps_the_last_mib(repo: Path, make: Any) -> None:
    ws = make(before_run="head -c 3000000 /dev/zero | tr '\\0' a; echo; echo END >&2")
    (run,) = ws.prepare(1, str(repo), None).hooks
    assert len(run.output) == 1 << 20 and run.output.endswith(b"a\nEND\n")


def test_hook_timeout_ends_the_whole_group(repo: Path, make: Any, tmp_path: Path) -> None:
    ws = make(hook_timeout_seconds=0.5, before_run="sleep 300 & sleep 301 & echo started; wait")
    with pytest.raises(HookFailed, match="timed out") as caught:
        ws.prepare(1, str(repo), None)
    (run,) = caught.value.hooks
    assert run.timed_out and run.exit_code is None and run.output == b"started\n"
    none_left(tmp_path)


def test_hook_ignoring_sigterm_is_killed(repo: Path, make: Any, tmp_path: Path) -> None:
    ws = make(hook_timeout_seconds=0.3, before_run="trap '' TERM; sleep 300 & wait; wait")
    with pytest.raises(HookFailed, match="timed out"):
        ws.prepare(1, str(repo), None)
    none_left(tmp_path)


def test_children_a_successful_hook_leaves_behind_are_ended(
    repo: Path, make: Any, tmp_path: Path
) -> None:
    ws = make(after_create="sleep 300 >/dev/null 2>&1 &")
    prepared = ws.prepare(1, str(repo), None)
    assert prepared.hooks[0].ok
    none_left(tmp_path)


def test_abort_ends_a_running_hook(repo: Path, make: Any, tmp_path: Path) -> None:
    ws = make(before_run='echo waiting; touch "$HOOK_LOG"; sleep 300')
    caught: list[BaseException] = []

    def prepare() -> None:
        try:
            ws.prepare(1, str(repo), None)
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=prepare)
    thread.start()
    wait_for((tmp_path / "hooks").exists, what="the hook to start")
    ws.abort()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert isinstance(caught[0], WorkspaceAborted)
    assert [(h.name, h.exit_code, h.timed_out) for h in caught[0].hooks] == [
        ("before_run", None, False)
    ]
    none_left(tmp_path)
    # An abort applies to the operation it interrupted, not to the next one.
    assert make().prepare(2, str(repo), None).created


def test_abort_ends_any_command_of_the_runner(tmp_path: Path) -> None:
    runner = GroupRunner()
    done: list[Completed] = []
    command = ["/bin/sh", "-c", "touch marker; sleep 300 & sleep 301"]
    env = {"PATH": os.environ["PATH"]}
    thread = threading.Thread(
        target=lambda: done.append(runner.run(command, cwd=tmp_path, env=env, timeout=60))
    )
    thread.start()
    wait_for((tmp_path / "marker").exists, what="the command to start")
    runner.abort()
    thread.join(timeout=10)
    assert done[0].aborted and done[0].returncode is None and not done[0].timed_out
    with pytest.raises(WorkspaceAborted):  # the rest of the aborted operation is refused
        runner.run(command, cwd=tmp_path, env=env, timeout=60)
    runner.begin()
    assert runner.run(["true"], cwd=tmp_path, env=env, timeout=10).returncode == 0


def test_abort_during_after_run_keeps_the_result(repo: Path, make: Any, tmp_path: Path) -> None:
    ws = make(after_run='touch "$HOOK_LOG"; sleep 300')
    prepared = ws.prepare(1, str(repo), None)
    (prepared.path / "b.txt").write_text("b\n")
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(ws.commit(1, prepared, "work")))
    thread.start()
    wait_for((tmp_path / "hooks").exists, what="after_run to start")
    ws.abort()
    thread.join(timeout=10)
    result, hooks = done[0]
    assert result.commit == git(repo, "rev-parse", "fleet/1")
    assert [(h.name, h.exit_code) for h in hooks] == [("after_run", None)]


# -- clones ---------------------------------------------------------------------------------


def test_url_is_cloned_once_and_fetched_for_the_next_task(repo: Path, make: Any) -> None:
    ws = make()
    url = f"file://{repo}"
    first = ws.prepare(1, url, None)
    assert first.base == git(repo, "rev-parse", "main")
    new_head = commit_all(repo, "upstream moves") if (repo / "c.txt").write_text("c\n") else ""
    second = ws.prepare(2, url, None)
    assert second.base == new_head  # fetched
    third = ws.prepare(3, url, "other")  # a remote branch, by its plain name
    assert third.base == git(repo, "rev-parse", "other")
    git(repo, "tag", "-f", "v1", "main")  # a tag moved upstream
    assert ws.prepare(4, url, "v1").base == new_head
    clones = [p.name for p in ws.paths.repos_dir.iterdir() if not p.name.startswith(".")]
    assert clones == [clone_name(url)]
    assert git(repo, "branch", "--list", "fleet/*") == ""  # branches live in our clone

    (second.path / "d.txt").write_text("d\n")
    result, _ = ws.commit(2, second, "in a clone")
    clone = ws.paths.repos_dir / clones[0]
    assert git(clone, "rev-parse", "fleet/2") == result.commit


def test_clone_of_a_missing_url_fails_with_gits_words(tmp_path: Path, make: Any) -> None:
    ws = make()
    with pytest.raises(
        WorkspaceError, match=r"(?s)cannot clone file://.*does not appear to be a git"
    ):
        ws.prepare(1, f"file://{tmp_path}/nowhere", None)
    assert [p.name for p in ws.paths.repos_dir.iterdir() if not p.name.startswith(".")] == []


CONCURRENT = """
import os, sys
from shared.config import WorkspaceConfig
from shared.paths import StatePaths
from fleetd.workspace.worktrees import Workspaces
state, repo, task = sys.argv[1], sys.argv[2], int(sys.argv[3])
ws = Workspaces(StatePaths(__import__("pathlib").Path(state)), WorkspaceConfig(),
                {"PATH": os.environ["PATH"], "HOME": state})
print(ws.prepare(task, repo, None).path)
"""


@pytest.mark.parametrize("kind", ["path", "url"])
def test_four_processes_prepare_on_one_repo_at_once(repo: Path, tmp_path: Path, kind: str) -> None:
    source = str(repo) if kind == "path" else f"file://{repo}"
    state = tmp_path / "state"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(state), source, str(task)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for task in range(1, 5)
    ]
    outputs = [proc.communicate(timeout=45) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    for task in range(1, 5):
        assert (state / "workspaces" / str(task) / "a.txt").is_file()


# -- remove ---------------------------------------------------------------------------------


def test_remove_keeps_the_branch(repo: Path, make: Any, tmp_path: Path) -> None:
    ws = make(before_remove='echo "bye $AGENT_FLEET_TASK" >> "$HOOK_LOG"; exit 1')
    prepared = ws.prepare(1, str(repo), None)
    (prepared.path / "b.txt").write_text("b\n")
    result, _ = ws.commit(1, prepared, "keep me")
    hooks = ws.remove(1)
    assert [(h.name, h.exit_code) for h in hooks] == [("before_remove", 1)]
    assert hook_log(tmp_path) == ["bye", "1"]
    assert not prepared.path.exists() and ws.existing() == []
    assert git(repo, "rev-parse", "fleet/1") == result.commit
    assert "fleet/1" not in git(repo, "worktree", "list")
    assert ws.remove(1) == []  # removing again is a no-op


def test_after_remove_a_new_attempt_finds_the_branch_again(repo: Path, make: Any) -> None:
    ws = make()
    prepared = ws.prepare(1, str(repo), None)
    (prepared.path / "b.txt").write_text("b\n")
    result, _ = ws.commit(1, prepared, "attempt 1")
    ws.remove(1)
    kept = ws.prepare(1, str(repo), None, fresh=False)
    assert kept.created and git(kept.path, "rev-parse", "HEAD") == result.commit
    ws.remove(1)
    reset = ws.prepare(1, str(repo), None, fresh=True)
    assert reset.base == prepared.base and git(reset.path, "rev-parse", "HEAD") == prepared.base


# -- helpers --------------------------------------------------------------------------------


def test_numstat_with_a_rename_and_a_binary_file() -> None:
    data = b"1\t2\ta.txt\0-\t-\tlogo.bin\x000\t0\t\0old name\0new name\0"
    assert parse_numstat(data) == [
        FileChange(path="a.txt", insertions=1, deletions=2),
        FileChange(path="logo.bin", insertions=None, deletions=None),
        FileChange(path="new name", insertions=0, deletions=0),
    ]
    assert parse_numstat(b"") == []


def test_commit_message_subject_and_trailer() -> None:
    message = commit_message(9, "  \n" + "x" * 100 + "\nmore", None)
    subject, blank, *rest = message.splitlines()
    assert len(subject) == 72 and blank == ""
    assert rest[-1] == "Agent-Fleet-Task: 9"
    assert commit_message(9, "", "final").splitlines()[0] == "agent-fleet task 9"
