"""Agent adapters, found by name through the `agent_fleet.agents` entry-point group.

A task's `agent` names an entry point; the object it points at is a factory called once per
worker with an `AdapterContext` and returning an `Adapter` (`fleetd.agents.base`). The
built-in adapters (codex, claude, command) are registered the same way, in pyproject.toml, so
a third-party package adds an agent by declaring one entry point, without touching fleetd (the
README's "Write an adapter"). Loading is lazy: a broken plug-in fails its own tasks, saying why.
"""

from __future__ import annotations

import dataclasses
from importlib.metadata import EntryPoint, entry_points

from fleetd.agents.base import Adapter, AdapterContext, AgentSummary
from fleetd.agents.guard import GuardedSummary, as_summary, contained
from shared.errors import FleetError
from shared.messages import Assign
from shared.models import ExecutionResult

ENTRY_POINT_GROUP = "agent_fleet.agents"
# The built-ins as pyproject.toml registers them, for a source tree run without its package
# metadata (an install older than the entry points, or none): the same names, the same objects.
BUILT_IN_POINTS = {
    name: EntryPoint(name=name, value=f"fleetd.agents.{name}:plugin", group=ENTRY_POINT_GROUP)
    for name in ("codex", "claude", "command")
}


def installed_agents() -> dict[str, EntryPoint]:
    """The adapters installed in this environment, by name (nothing is imported)."""
    found = {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}
    return {**BUILT_IN_POINTS, **found}


def unknown_agent(name: str, installed: list[str]) -> str:
    """What a user is told about an agent name no installed adapter answers to."""
    names = ", ".join(sorted(installed)) or "none"
    return (
        f"no agent adapter named {name!r} is installed (installed: {names}); an adapter is a "
        f"package with an entry point in the {ENTRY_POINT_GROUP!r} group"
    )


class Adapters:
    """One worker's adapters, each loaded from its entry point on first use and kept.

    `context` is what every factory gets, its `name` set to the adapter's own."""

    def __init__(
        self, context: AdapterContext, points: dict[str, EntryPoint] | None = None
    ) -> None:
        self.context = context
        self.points = installed_agents() if points is None else points
        self.loaded: dict[str, Adapter] = {}

    def __getitem__(self, name: str) -> Adapter:
        """The adapter for `name`; FleetError with the reason when there is none or it breaks."""
        adapter = self.loaded.get(name)
        if adapter is not None:
            return adapter
        point = self.points.get(name)
        if point is None:
            raise FleetError(unknown_agent(name, list(self.points)))
        try:
            factory = point.load()
            adapter = factory(dataclasses.replace(self.context, name=name))
        except FleetError:
            raise
        except Exception as exc:  # a plug-in's bug or missing dependency fails its tasks only
            raise FleetError(
                f"the {name!r} agent adapter ({point.value}) could not be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.loaded[name] = adapter
        return adapter

    def get(self, name: str) -> Adapter | None:
        """The adapter for `name`, or None if it cannot be had (the error was said at start)."""
        try:
            return self[name]
        except FleetError:
            return None

    def summary(self, assign: Assign) -> AgentSummary:
        """The run's summary from its adapter, guarded (`GuardedSummary`); a plain one if the
        adapter cannot be loaded (starting the run then says why)."""
        name, mask = assign.spec.agent, self.context.mask
        adapter = self.get(name)
        if adapter is None:
            return AgentSummary()
        try:
            return as_summary(GuardedSummary(adapter.summary(assign), name, mask))
        except Exception as exc:  # a plug-in's bug fails its run, not the worker
            guarded = GuardedSummary(AgentSummary(), name, mask)
            guarded.broken = contained(name, "summary could not be made", exc, mask)
            return as_summary(guarded)

    def finish(self, assign: Assign, result: ExecutionResult) -> None:
        """The adapter's `finish` for a run that ended; a plug-in's exception there is logged
        and said in the result's error (what it keeps for a resume may be missing)."""
        adapter = self.get(assign.spec.agent)
        if adapter is None:
            return
        try:
            adapter.finish(assign, result)
        except Exception as exc:
            said = contained(assign.spec.agent, "finish failed", exc, self.context.mask)
            result.error = f"{result.error}; {said}" if result.error else said
