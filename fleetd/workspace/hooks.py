"""Workspace hooks: the configured shell snippets, each run in its own process group."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from fleetd.workspace.commands import GroupRunner
from fleetd.workspace.errors import WorkspaceAborted, WorkspaceError

# The configured hooks, in the order an attempt runs them (before_remove: at removal).
HookName = Literal["after_create", "before_run", "after_run", "before_remove"]
HOOK_OUTPUT_CAP = 1 << 20  # the last MiB of a hook's output is kept

_encode_json = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class HookResult:
    """One hook execution, for the worker to record as an event (secrets not yet masked)."""

    name: HookName
    exit_code: int | None  # None if ended by its timeout or an abort, or if it could not start
    timed_out: bool
    output: bytes  # stdout and stderr interleaved, the last HOOK_OUTPUT_CAP bytes
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def event_line(self) -> bytes:
        """The run as one agent-output line (type `fleet.hook`), recorded with the attempt."""
        return _encode_json(
            {
                "type": "fleet.hook",
                "hook": self.name,
                "exit_code": self.exit_code,
                "timed_out": self.timed_out,
                "duration_s": round(self.duration_s, 3),
                "output": self.output.decode("utf-8", errors="replace"),
            }
        )


def run_hook(
    runner: GroupRunner,
    name: HookName,
    snippet: str,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
) -> HookResult:
    """Run `snippet` with /bin/sh in `cwd`, stdin /dev/null, ended with its group on timeout."""
    try:
        done = runner.run(
            ["/bin/sh", "-c", snippet],
            cwd=cwd,
            env=env,
            timeout=timeout,
            merge=True,
            tail=HOOK_OUTPUT_CAP,
        )
    except WorkspaceAborted:
        raise
    except WorkspaceError as exc:  # it could not start: its "output" says why
        return HookResult(name, None, False, str(exc).encode(), 0.0)
    return HookResult(name, done.returncode, done.timed_out, done.stdout, done.duration_s)


def failure_text(run: HookResult, timeout: float) -> str:
    """Why a hook run is not ok, and what to do, in words for the user."""
    if run.timed_out:
        return (
            f"workspace hook {run.name} timed out after {timeout:g} s and was ended; raise "
            "workspace.hook_timeout_seconds if it needs longer"
        )
    if run.exit_code is None:
        return f"workspace hook {run.name} could not run: {run.output.decode(errors='replace')}"
    return (
        f"workspace hook {run.name} failed with exit code {run.exit_code}; its output is in the "
        "task's events; fix the hook in the [workspace] config"
    )
