"""A third-party adapter, installed with pip into a virtualenv of its own, runs a task.

The example package (tests/data/example_adapter) declares one entry point in the
`agent_fleet.agents` group; nothing in fleetd names it. The virtualenv sees this one's packages
(agent-fleet and its dependencies) through a `.pth` line, so nothing is downloaded; pip builds
the example from its source tree with the build backend from the configured (local) index.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import Fleet, short_tempdir
from tests.support.procs import processes_under
from tests.support.venvs import venv_seeing_ours

pytestmark = pytest.mark.timeout(180)

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example_adapter"


def make_venv_with_example(root: Path) -> Path:
    """A virtualenv holding the example adapter, seeing this one's packages; its python."""
    python, _ = venv_seeing_ours(root)
    source = root / "example_adapter"
    shutil.copytree(EXAMPLE, source)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    done = subprocess.run(
        [*pip, "--no-deps", str(source)], capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"
    return python


@pytest.fixture(scope="module")
def plugin_root() -> Iterator[Path]:
    root = short_tempdir("plug")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def plugin_python(plugin_root: Path) -> Path:
    return make_venv_with_example(plugin_root)


@pytest.fixture
def plugin_fleet(plugin_root: Path, plugin_python: Path) -> Iterator[Fleet]:
    state = short_tempdir()
    fleet = Fleet(state / "s", {"ECHO_AGENT_GREETING": "hi from the plug-in"})
    fleet.python = str(plugin_python)
    try:
        fleet.start("--workers", "1")
        yield fleet
    finally:
        fleet.close()
        left = processes_under(state)
        shutil.rmtree(state, ignore_errors=True)
        assert not left, f"processes left behind: {left}"


def test_the_installed_adapter_is_found_by_its_entry_point(plugin_python: Path) -> None:
    names = subprocess.run(
        [str(plugin_python), "-c", "from fleetd.agents import installed_agents as i; print(*i())"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    assert sorted(names) == ["claude", "codex", "command", "echo"]


def test_a_task_for_the_plugin_adapter_runs_and_its_summary_fills_the_result(
    plugin_fleet: Fleet, tmp_path: Path
) -> None:
    task = plugin_fleet.enqueue("--agent", "echo", "--cwd", str(tmp_path), "three word prompt")
    shown = plugin_fleet.wait_state(task, "succeeded", "failed")
    assert shown["state"] == "succeeded", json.dumps(shown, indent=1)
    result = shown["result"]
    assert result["final_message"] == "hi from the plug-in: three word prompt"
    assert result["usage"]["total_tokens"] == 3
    assert (tmp_path / "echo.txt").read_text() == "hi from the plug-in: three word prompt\n"
    kinds = [event["payload"]["kind"] for event in plugin_fleet.events(task)]
    assert kinds == ["said", "done"]


def test_an_agent_no_adapter_answers_to_is_refused_naming_the_installed_ones(
    plugin_fleet: Fleet,
) -> None:
    refused = plugin_fleet.ctl("enqueue", "--agent", "nosuch", "do it", check=False)
    assert refused.returncode == 2, refused  # a bad request: a usage error
    assert "no agent adapter named 'nosuch' is installed" in refused.stderr
    assert "claude, codex, command, echo" in refused.stderr
    assert "Traceback" not in refused.stderr
