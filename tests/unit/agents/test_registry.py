"""Adapters found by name through the `agent_fleet.agents` entry points, loaded lazily."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

from fleetd.agents import BUILT_IN_POINTS, ENTRY_POINT_GROUP, Adapters, installed_agents
from fleetd.agents.base import AdapterContext
from fleetd.agents.codex import CodexAdapter
from fleetd.agents.command import CommandAdapter
from fleetd.worker.logic import Worker
from shared.config import FleetConfig, load_config
from shared.errors import FleetError
from shared.models import TaskSpec
from tests.unit.worker.drive import NOW, assign, finished, run_agent, seal

HERE = "tests.unit.agents.test_registry"
made: list[AdapterContext] = []


def counting_factory(context: AdapterContext) -> CommandAdapter:
    made.append(context)
    return CommandAdapter()


def failing_factory(context: AdapterContext) -> CommandAdapter:
    raise RuntimeError("needs a library that is not installed")


class BrokenCommand(CommandAdapter):
    def command(self, assign, cwd, env):  # type: ignore[no-untyped-def]
        raise KeyError("a bug in the plug-in")


def buggy_factory(context: AdapterContext) -> BrokenCommand:
    return BrokenCommand()


def point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


@pytest.fixture
def config(tmp_path: Path) -> FleetConfig:
    loaded = load_config({"HOME": str(tmp_path)}, None, {"state_dir": str(tmp_path / "state")})
    loaded.paths().create()
    return loaded


@pytest.fixture
def context(config: FleetConfig) -> AdapterContext:
    return AdapterContext("", config, config.paths(), {}, lambda data: data)


def test_the_built_in_adapters_are_registered_as_entry_points() -> None:
    """In agent-fleet's own metadata (pyproject.toml), as BUILT_IN_POINTS has them for a
    source tree without it."""
    registered = {p.name: p for p in entry_points(group=ENTRY_POINT_GROUP)}
    assert {name: registered.get(name) for name in BUILT_IN_POINTS} == BUILT_IN_POINTS
    assert installed_agents()["codex"].value == "fleetd.agents.codex:plugin"


def test_an_adapter_is_loaded_once_on_first_use_with_its_own_name(
    context: AdapterContext,
) -> None:
    made.clear()
    adapters = Adapters(context, {"mine": point("mine", f"{HERE}:counting_factory")})
    assert adapters.loaded == {}
    first = adapters["mine"]
    assert adapters["mine"] is first
    assert [c.name for c in made] == ["mine"]


def test_the_built_in_factories_build_their_adapters(context: AdapterContext) -> None:
    adapters = Adapters(context)
    assert isinstance(adapters["codex"], CodexAdapter)
    assert isinstance(adapters["command"], CommandAdapter)


def test_an_unknown_name_says_which_adapters_are_installed(context: AdapterContext) -> None:
    adapters = Adapters(context, {"b": point("b", f"{HERE}:x"), "a": point("a", f"{HERE}:x")})
    installed = r"no agent adapter named 'zz' is installed \(installed: a, b\)"
    with pytest.raises(FleetError, match=installed):
        adapters["zz"]
    assert adapters.get("zz") is None


def test_a_plugin_that_cannot_load_fails_with_its_reason(context: AdapterContext) -> None:
    adapters = Adapters(
        context,
        {
            "gone": point("gone", "no_such_module_here:plugin"),
            "fails": point("fails", f"{HERE}:failing_factory"),
        },
    )
    with pytest.raises(FleetError, match=r"'gone' agent adapter .* could not be loaded: Module"):
        adapters["gone"]
    with pytest.raises(FleetError, match="RuntimeError: needs a library that is not installed"):
        adapters["fails"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("fails", "failing_factory", "could not be loaded: RuntimeError"),
        ("buggy", "buggy_factory", "the 'buggy' adapter failed: KeyError"),
    ],
)
def test_a_broken_plugin_fails_its_attempt_and_the_worker_lives_on(
    config: FleetConfig, tmp_path: Path, name: str, value: str, words: str
) -> None:
    worker = Worker(config, "w1", {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, pid=4242)
    try:
        worker.adapters.points[name] = point(name, f"{HERE}:{value}")
        worker.on_broker(assign(TaskSpec(prompt="p", agent=name), execution=1), NOW)
        report = finished(seal(worker, run_agent(worker)))
        assert report.outcome == "failed"
        assert words in (report.result.error or "")
        assert worker.adapters["command"] is not None  # the others still load
    finally:
        worker.close()
