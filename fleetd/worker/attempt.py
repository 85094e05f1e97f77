"""What an attempt needs around its agent: a working directory, and its report cut short."""

from __future__ import annotations

import contextlib
from pathlib import Path

from shared import messages as m
from shared.errors import FleetError
from shared.paths import StatePaths


def workdir_for(paths: StatePaths, assign: m.Assign) -> Path:
    """The task's own directory, a resumed attempt's scratch, or a fresh scratch directory."""
    spec = assign.spec
    if spec.cwd is not None:
        path = Path(spec.cwd)
        if not path.is_dir():
            raise FleetError(f"working directory {spec.cwd} does not exist")
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
