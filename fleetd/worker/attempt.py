"""What an attempt needs around its agent: a working directory or a worktree (prepared and
committed on the worker's helper thread), and its report when a full disk cut it short."""

from __future__ import annotations

import contextlib
from pathlib import Path

from fleetd.runtime.locks import FileLock
from fleetd.runtime.redaction import Redactor
from fleetd.workspace.hooks import HookResult
from fleetd.workspace.worktrees import Prepared, Workspaces
from shared import messages as m
from shared.errors import FleetError
from shared.models import WorkspaceResult
from shared.paths import StatePaths


def workdir_for(paths: StatePaths, assign: m.Assign) -> Path:
    """The task's own directory, a resumed attempt's scratch, or a fresh scratch directory."""
    spec = assign.spec
    if spec.cwd is not None:
        path = Path(spec.cwd)
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise FleetError(f"working directory {spec.cwd} {what}")
        return path
    if assign.resume is not None:
        earlier = paths.scratch_dir / str(assign.resume.execution)
        if earlier.is_dir():
            return earlier  # the resumed thread's files are there
    scratch = paths.scratch_dir / str(assign.execution)
    scratch.mkdir(mode=0o700, exist_ok=True)
    return scratch


def remove_empty_scratch(paths: StatePaths, assign: m.Assign) -> None:
    """A scratch directory the agent left empty is not worth keeping."""
    if assign.spec.cwd is None:
        with contextlib.suppress(OSError):
            (paths.scratch_dir / str(assign.execution)).rmdir()


def cut_short(finished: m.Finished, stored: int, printed: int) -> m.Finished:
    """The recorder could not store the whole stream (a full disk): the run cannot succeed."""
    result = finished.result
    lost = f"events {stored + 1} to {printed} could not be stored (disk full)"
    result.error = f"{result.error}; {lost}" if result.error else lost
    outcome = "failed" if finished.outcome == "succeeded" else finished.outcome
    return m.Finished(execution=finished.execution, outcome=outcome, result=result)


def prepare_workspace(workspaces: Workspaces, assign: m.Assign, lock: FileLock) -> Prepared:
    """On the helper thread: wait out a gc of this worktree, then make it ready."""
    lock.acquire()
    assert assign.spec.repo is not None
    # A resumed thread continues in the worktree as the last attempt left it.
    fresh = assign.resume is None
    return workspaces.prepare(assign.task, assign.spec.repo, assign.spec.ref, fresh)


def commit_work(
    workspaces: Workspaces, redactor: Redactor, task: int, prepared: Prepared, message: str
) -> tuple[WorkspaceResult, list[HookResult]]:
    """On the helper thread: commit the agent's work; the kept patch gets its secrets masked."""
    result, hooks = workspaces.commit(task, prepared, message)
    if result.patch_file:
        patch = Path(result.patch_file)
        masked, changed = redactor.mask(patch.read_bytes())
        if changed:
            patch.write_bytes(masked)
    return result, hooks
