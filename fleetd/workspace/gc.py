"""Workspace garbage collection: removing the worktrees of finished tasks.

Worktrees go when `fleetctl gc` asks or `workspace.retention_hours` after their task
finished; never while a run holds the task's lock. Branches always stay.
"""

from __future__ import annotations

from collections.abc import Mapping

from loguru import logger

from fleetd.runtime.locks import FileLock
from fleetd.workspace.worktrees import Workspaces
from shared import messages as m
from shared.config import FleetConfig, agent_environment
from shared.models import TERMINAL_STATES, TaskView, now_us


class WorkspaceCollector:
    """Chooses and removes the worktrees of finished tasks (blocking: call off the loop)."""

    TASK_LIMIT = m.LIST_LIMIT_MAX  # the most one ListTasks may ask for

    def __init__(self, config: FleetConfig, host_env: Mapping[str, str]) -> None:
        self.paths = config.paths()
        self.workspaces = Workspaces(
            self.paths, config.workspace, agent_environment(config, host_env)
        )

    def eligible(self, tasks: list[TaskView], older_than_hours: float | None) -> list[int]:
        """Finished tasks with a worktree on disk, finished at least that long ago."""
        age_us = (older_than_hours or 0.0) * 3600 * 1_000_000
        if not age_us >= 0:  # NaN too
            raise ValueError(f"older_than_hours must be 0 or more, not {older_than_hours}")
        now = now_us()
        if age_us > now:
            return []  # nothing finished that long ago (also inf and 1e300)
        cutoff = now - int(age_us)
        on_disk = set(self.workspaces.existing())
        return sorted(
            t.id
            for t in tasks
            if t.id in on_disk
            and t.state in TERMINAL_STATES
            and t.finished_at is not None
            and t.finished_at <= cutoff
        )

    def remove(self, tasks: list[int]) -> m.WorkspacesCollected:
        removed, busy = [], []
        for task in tasks:
            lock = FileLock(self.paths.task_lock_file(task))
            try:
                if not lock.acquire(wait=False):
                    busy.append(task)  # retried meanwhile: a worker holds it
                    continue
                for hook in self.workspaces.remove(task):
                    if not hook.ok:
                        logger.warning("task {}: before_remove hook failed; removed anyway", task)
                removed.append(task)
            finally:
                lock.release()
        if removed:
            logger.info("removed the worktrees of tasks {}", removed)
        return m.WorkspacesCollected(removed=removed, busy=busy)

    def abort(self) -> None:
        self.workspaces.abort()
