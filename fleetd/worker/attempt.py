"""What an attempt needs around its agent: a working directory or a worktree (prepared and
committed on the worker's helper thread), and its report when a full disk cut it short."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from fleetd.runtime.locks import FileLock
from fleetd.runtime.redaction import Redactor
from fleetd.workspace.hooks import HookResult
from fleetd.workspace.worktrees import Prepared, Workspaces
from shared import messages as m
from shared.errors import FleetError
from shared.models import WorkspaceResult
from shared.paths import StatePaths


class Scratch:
    """Working directories for tasks that name none: `scratch/<execution>` while the agent runs.

    Making and removing a directory per task cost a worker 0.3-0.4 ms of CPU (and 2-3 ms of
    wall time on a loaded ext4) per task, its largest single cost. So a directory the agent
    left empty is kept, renamed to this worker's hidden spare, and renamed back for the next
    task: two renames and one read of a directory instead. The name is the execution's while
    an agent may use it, so what a crash leaves is found as before; the spare holds nothing.
    """

    def __init__(self, paths: StatePaths, worker_id: str) -> None:
        self.root = paths.scratch_dir
        self.spare = self.root / f".spare-{worker_id}"

    def workdir_for(self, assign: m.Assign) -> Path:
        """The task's own directory, a resumed attempt's scratch, or a fresh scratch directory."""
        spec = assign.spec
        if spec.cwd is not None:
            path = Path(spec.cwd)
            if not path.is_dir():
                what = "is not a directory" if path.exists() else "does not exist"
                raise FleetError(f"working directory {spec.cwd} {what}")
            return path
        if assign.resume is not None:
            earlier = self.root / str(assign.resume.execution)
            if earlier.is_dir():
                return earlier  # the resumed thread's files are there
        scratch = self.root / str(assign.execution)
        try:
            os.rename(self.spare, scratch)
        except OSError:  # no spare yet (or a crash took it): a new one
            scratch.mkdir(mode=0o700, exist_ok=True)
        return scratch

    def release(self, assign: m.Assign) -> None:
        """A scratch directory the agent left empty becomes the spare; one with files stays."""
        if assign.spec.cwd is not None:
            return
        scratch = self.root / str(assign.execution)
        with contextlib.suppress(OSError):
            with os.scandir(scratch) as entries:
                if any(entries):
                    return
            os.rename(scratch, self.spare)


def cut_short(finished: m.Finished, stored: int, printed: int) -> m.Finished:
    """The recorder could not store the whole stream (a full disk): the run cannot succeed."""
    result = finished.result
    lost = f"events {stored + 1} to {printed} could not be stored (disk full)"
    result.error = f"{result.error}; {lost}" if result.error else lost
    outcome = "failed" if finished.outcome == "succeeded" else finished.outcome
    return m.Finished(
        execution=finished.execution, outcome=outcome, result=result, released=finished.released
    )


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
