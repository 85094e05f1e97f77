"""Workspaces: one git worktree per repository task, on branch `fleet/<task>`, and its hooks.

Blocking functions, called by the worker from a helper thread (its event loop keeps
heartbeating); `Workspaces.abort()` may be called from any thread. A repository given by URL is
cloned once under `repos/` and fetched for later tasks; worktrees live in `workspaces/<task>`.
A small JSON file per task in `workspaces/.meta/` remembers the source repository and the base
commit, so a retry resets to the same base and `remove` finds the repository to prune; it stays,
like the branch, when the worktree is removed.

One attempt, from the worker's helper thread:
    prepared = workspaces.prepare(task, spec.repo, spec.ref, fresh=True)  # HookFailed: fail it
    ...run the agent with --cd prepared.path...
    result, hooks = workspaces.commit(task, prepared, commit_message(task, prompt, final))
Every HookResult (prepared.hooks, hooks, WorkspaceError.hooks) is for the worker to record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from loguru import logger

from fleetd.workspace.commands import GroupRunner
from fleetd.workspace.errors import HookFailed, WorkspaceAborted, WorkspaceError
from fleetd.workspace.git import Git, check_ref, clone_name, git_env, is_url, repo_lock
from fleetd.workspace.hooks import HookName, HookResult, failure_text, run_hook
from shared.config import WorkspaceConfig
from shared.models import DiffSummary, WorkspaceResult
from shared.paths import StatePaths


@dataclass(frozen=True)
class Prepared:
    """A worktree ready for the agent."""

    path: Path
    branch: str
    base: str  # the commit the branch started from
    created: bool  # the worktree is new, or was reset to base (after_create ran)
    hooks: list[HookResult] = field(default_factory=list)  # after_create, before_run, in order


@dataclass(frozen=True)
class _Meta:
    """What a task's worktree came from; kept beside the worktrees (a few hundred bytes)."""

    repo: str
    source: str  # directory git runs in for worktree commands: the repo or our clone of it
    lock: str  # the lock file serialising changes to that repository
    base: str
    branch: str


def repository_lock_file(paths: StatePaths, key: str) -> Path:
    """The lock serialising changes to one repository, named by its git common directory (a
    local repository) or our clone's path; the tracker takes it to fetch into its clones."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return paths.repos_dir / ".locks" / f"{digest}.lock"


class Workspaces:
    """Make, commit, summarise and remove task worktrees; run the configured hooks."""

    def __init__(self, paths: StatePaths, config: WorkspaceConfig, env: Mapping[str, str]) -> None:
        self.paths = paths
        self.config = config
        self.env = dict(env)
        self._runner = GroupRunner()
        self._git = Git(self._runner, git_env(env, config.author_name, config.author_email))

    def abort(self) -> None:
        """Thread-safe: end the hook or git command in progress; its operation raises
        WorkspaceAborted. Operations started afterwards are not affected."""
        self._runner.abort()

    def existing(self) -> list[int]:
        """Task ids that have a worktree on disk (for gc)."""
        try:
            names = [entry.name for entry in self.paths.workspaces_dir.iterdir() if entry.is_dir()]
        except FileNotFoundError:
            return []
        return sorted(int(name) for name in names if name.isascii() and name.isdigit())

    # -- prepare ---------------------------------------------------------------------------

    def prepare(self, task: int, repo: str, ref: str | None, fresh: bool = True) -> Prepared:
        """Make (or, for a retry, reuse) the task's worktree and run after_create and before_run.

        fresh=True resets a reused worktree to the base commit and removes every untracked and
        ignored file (after_create runs again); fresh=False keeps it as the last attempt left it.
        """
        self._runner.begin()
        path = self._worktree(task)
        branch = f"fleet/{task}"
        if ref is not None:
            check_ref(ref)
        meta = self._read_meta(task)
        url = is_url(repo)
        source, lock = self._clone_source(repo) if url else self._local_source(repo)
        with repo_lock(lock, self._runner):
            if url:
                self._git.clone_or_fetch(repo, source, fetch=meta is None)
            meta = meta or self._new_meta(task, repo, source, lock, ref, url)
            created = self._place(path, meta, fresh)
        prepared = Prepared(path=path, branch=branch, base=meta.base, created=created)
        hooks = self._run_required(
            ["after_create", "before_run"] if created else ["before_run"], task, prepared
        )
        return replace(prepared, hooks=hooks)

    def _worktree(self, task: int) -> Path:
        if isinstance(task, bool) or not isinstance(task, int) or task < 0:
            raise WorkspaceError(f"invalid task id {task!r} for a workspace")
        path = self.paths.workspace(task)
        if path.is_symlink():  # never follow it: rmtree and git would act outside our state
            raise WorkspaceError(f"{path} is a symbolic link, not a worktree; remove it")
        return path

    def _local_source(self, repo: str) -> tuple[Path, Path]:
        path = Path(repo).expanduser()
        if not path.is_absolute():
            raise WorkspaceError(f"repository path {repo!r} must be absolute")
        if not path.is_dir():
            raise WorkspaceError(f"repository {repo} does not exist or is not a directory")
        done = self._git.call(
            path, "rev-parse", "--path-format=absolute", "--git-common-dir", check=False
        )
        if done.returncode != 0:
            raise WorkspaceError(
                f"{repo} is not a git repository: give the path of a git checkout, or a URL"
            )
        common = Path(done.stdout.decode().strip()).resolve()
        return path.resolve(), self._lock_file(str(common))

    def _clone_source(self, url: str) -> tuple[Path, Path]:
        clone = self.paths.repos_dir / clone_name(url)
        return clone, self._lock_file(str(clone))

    def _lock_file(self, key: str) -> Path:
        return repository_lock_file(self.paths, key)

    def _new_meta(
        self, task: int, repo: str, source: Path, lock: Path, ref: str | None, url: bool
    ) -> _Meta:
        """The first attempt: resolve the base commit and remember it (before the worktree
        exists, so a crash in between still finds it)."""
        base = self._git.resolve_base(source, ref, url)
        branch = f"fleet/{task}"
        if self._git.has_branch(source, branch):
            raise WorkspaceError(
                f"branch {branch} already exists in {source} but this fleet did not make it for "
                f"task {task} (an older state directory?); rename or delete it: "
                f"`git -C {source} branch -m {branch} old-{branch}`"
            )
        meta = _Meta(repo=repo, source=str(source), lock=str(lock), base=base, branch=branch)
        self._write_meta(task, meta)
        return meta

    def _place(self, path: Path, meta: _Meta, fresh: bool) -> bool:
        """Make the worktree, or keep it (fresh=False); True if it is new (after_create is due).

        A fresh retry gets a new worktree rather than a reset one: no half-done merge or rebase
        state, no file the agent left, whatever its permissions.
        """
        if not fresh and self._is_worktree(path):
            return False
        source = Path(meta.source)
        self._drop_worktree(source, path)
        if path.exists():
            raise WorkspaceError(f"cannot remove the old worktree {path}: remove it by hand")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not fresh and self._git.has_branch(source, meta.branch):
            self._git.call(source, "worktree", "add", str(path), meta.branch)
        else:
            self._git.call(source, "worktree", "add", "-B", meta.branch, str(path), meta.base)
        return True

    def _drop_worktree(self, source: Path, path: Path) -> None:
        """Remove the worktree at `path` from disk and from `source`'s list; keep the branch."""
        if path.exists():
            remove = ("worktree", "remove", "--force", "--force", str(path))
            self._git.call(source, *remove, check=False)
            _remove_tree(path)
        self._git.call(source, "worktree", "prune", check=False)

    def _is_worktree(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        done = self._git.call(path, "rev-parse", "--show-toplevel", check=False)
        return done.returncode == 0 and Path(done.stdout.decode().strip()) == path.resolve()

    # -- commit ----------------------------------------------------------------------------

    def commit(
        self, task: int, prepared: Prepared, message: str
    ) -> tuple[WorkspaceResult, list[HookResult]]:
        """Commit whatever the agent changed on the task's branch, summarise the diff from the
        base and save the patch; then run after_run (its failure or abort is logged and
        ignored: the result stands)."""
        self._runner.begin()
        meta = self._require_meta(task)
        path = prepared.path
        try:
            with repo_lock(Path(meta.lock), self._runner):
                message = message or f"agent-fleet task {task}\n"
                commit = self._git.commit_work(path, prepared.branch, prepared.base, message)
            diff, patch = DiffSummary(), None
            if commit is not None:
                diff = self._git.diff_summary(path, prepared.base, commit)
                patch = self.paths.diffs_dir / f"{task}-{commit[:12]}.patch"
                self._git.write_patch(path, prepared.base, commit, patch)
        except WorkspaceAborted:
            raise
        except WorkspaceError as exc:
            exc.hooks.extend(self._run_optional("after_run", task, prepared))
            raise
        result = WorkspaceResult(
            path=str(prepared.path),
            branch=prepared.branch,
            base=prepared.base,
            commit=commit,
            diff=diff,
            patch_file=str(patch) if patch else None,
        )
        return result, self._run_optional("after_run", task, prepared)

    # -- remove ----------------------------------------------------------------------------

    def remove(self, task: int) -> list[HookResult]:
        """Run before_remove (failure ignored), remove the worktree and prune; the branch stays.

        The caller makes sure no attempt of the task is running.
        """
        self._runner.begin()
        path = self._worktree(task)
        meta = self._read_meta(task)
        hooks: list[HookResult] = []
        if path.is_dir():
            base = meta.base if meta else ""
            hooks = self._run_optional(
                "before_remove", task, Prepared(path, f"fleet/{task}", base, False)
            )
            if self._runner.aborted:
                raise WorkspaceAborted(f"removal of {path} aborted", hooks)
        if meta is not None:
            with repo_lock(Path(meta.lock), self._runner):
                self._drop_worktree(Path(meta.source), path)
        else:
            _remove_tree(path)
        if path.exists():
            logger.warning("task {}: could not remove all of the worktree {}", task, path)
        # The metadata stays with the branch: a later attempt of the task starts from it again.
        return hooks

    # -- hooks -----------------------------------------------------------------------------

    def _run_required(
        self, names: list[HookName], task: int, prepared: Prepared
    ) -> list[HookResult]:
        runs: list[HookResult] = []
        for name in names:
            run = self._hook(name, task, prepared)
            if run is None:
                continue
            runs.append(run)
            if self._runner.aborted:
                raise WorkspaceAborted(f"workspace hook {name} aborted", runs)
            if not run.ok:
                raise HookFailed(failure_text(run, self.config.hook_timeout_seconds), runs)
        return runs

    def _run_optional(self, name: HookName, task: int, prepared: Prepared) -> list[HookResult]:
        """Run a hook whose failure, or abort, is only logged (after_run, before_remove)."""
        run = self._hook(name, task, prepared)
        if run is None:
            return []
        if not run.ok:
            logger.warning(
                "task {}: {} (ignored)", task, failure_text(run, self.config.hook_timeout_seconds)
            )
        return [run]

    def _hook(self, name: HookName, task: int, prepared: Prepared) -> HookResult | None:
        """Run the configured snippet `name` in the worktree, with the task in its env."""
        snippet = getattr(self.config, name)
        if not snippet:
            return None
        env = {
            **self.env,
            "AGENT_FLEET_TASK": str(task),
            "AGENT_FLEET_WORKSPACE": str(prepared.path),
            "AGENT_FLEET_BRANCH": prepared.branch,
            "AGENT_FLEET_BASE": prepared.base,
            "AGENT_FLEET_HOOK": name,
        }
        timeout = self.config.hook_timeout_seconds
        return run_hook(self._runner, name, snippet, prepared.path, env, timeout)

    # -- metadata --------------------------------------------------------------------------

    def _meta_file(self, task: int) -> Path:
        return self.paths.workspaces_dir / ".meta" / f"{task}.json"

    def _read_meta(self, task: int) -> _Meta | None:
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            return _Meta(**json.loads(self._meta_file(task).read_text()))
        return None

    def _require_meta(self, task: int) -> _Meta:
        meta = self._read_meta(task)
        if meta is None:
            raise WorkspaceError(f"task {task} has no prepared workspace (prepare it first)")
        return meta

    def _write_meta(self, task: int, meta: _Meta) -> None:
        target = self._meta_file(task)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_text(json.dumps(meta.__dict__))
        os.replace(partial, target)


def _remove_tree(path: Path) -> None:
    """Delete a directory tree even where the agent took away write permission."""
    if not path.exists() and not path.is_symlink():
        return
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            child = os.path.join(root, name)
            if not os.path.islink(child):  # chmod would follow a link out of the tree
                with contextlib.suppress(OSError):
                    os.chmod(child, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def commit_message(task: int, prompt: str, final_message: str | None) -> str:
    """The message of a task's commit: the prompt's first line as subject, then the prompt and
    the agent's final message, and a trailer naming the task."""
    lines = [line.strip() for line in prompt.strip().splitlines() if line.strip()]
    subject = lines[0] if lines else f"agent-fleet task {task}"
    if len(subject) > 72:
        subject = subject[:71] + "…"
    parts = [subject, "", prompt.strip()]
    if final_message and final_message.strip():
        parts += ["", "Agent's final message:", "", final_message.strip()]
    parts += ["", f"Agent-Fleet-Task: {task}"]
    return "\n".join(parts) + "\n"
