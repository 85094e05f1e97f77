"""The errors workspaces raise; each text says why and what to do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.errors import FleetError


class WorkspaceError(FleetError):
    """A workspace cannot be made, committed or removed; the text says why and what to do.

    `hooks` holds the hook runs made before the failure, so their output can still be recorded.
    """

    def __init__(self, message: str, hooks: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.hooks = list(hooks)


class WorkspaceAborted(WorkspaceError):
    """`abort()` ended the step in progress (the task was cancelled or the fleet is stopping)."""


class HookFailed(WorkspaceError):
    """A hook that must succeed (after_create, before_run) failed; `hooks` has every run so far."""
