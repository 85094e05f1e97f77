"""A plug-in adapter with a bug in its summary fails its own task, not the worker or the fleet.

Without the guard, the summary's exception on the worker's loop ended the worker; the task went
back to the queue, ran again, ended the next worker the same way, and the crash loop stopped
fleetd. The plug-in here is installed the way pip would (a module and a .dist-info with its
entry point) into a virtualenv that sees this one's packages.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import Fleet, short_tempdir
from tests.support.procs import processes_under
from tests.support.venvs import venv_seeing_ours

pytestmark = pytest.mark.timeout(180)

KNOWN_SECRET = "sk-proj-Bugged0Adapter1Known2Secret3Value"

BROKEN_ADAPTER = """
import sys
from fleetd.agents.base import AgentCommand, AgentSummary


class BrokenSummary(AgentSummary):
    def feed(self, payload, parsed):
        if b"second" in payload:
            # A bug that quotes what it read, and the host's key: both must come out masked.
            raise ValueError("cannot read " + payload.decode() + " with " + KEY)
        self.final_message = payload.decode()


class BrokenAdapter:
    def __init__(self, context):
        global KEY
        KEY = context.host_env["OPENAI_API_KEY"]

    def command(self, assign, cwd, env):
        script = "print('first'); print('second'); print('third')"
        return AgentCommand(argv=[sys.executable, "-c", script], cwd=cwd, env=env)

    def summary(self, assign):
        return BrokenSummary()

    def finish(self, assign, result):
        raise RuntimeError("finish is broken too")


def plugin(context):
    return BrokenAdapter(context)
"""


def make_venv_with_broken_adapter(root: Path) -> Path:
    python, site = venv_seeing_ours(root)
    (site / "fleet_broken_adapter.py").write_text(BROKEN_ADAPTER)
    meta = site / "fleet_broken_adapter-0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fleet-broken-adapter\nVersion: 0.1\n"
    )
    (meta / "entry_points.txt").write_text(
        "[agent_fleet.agents]\nbroken = fleet_broken_adapter:plugin\n"
    )
    return python


@pytest.fixture
def broken_fleet() -> Iterator[Fleet]:
    state = short_tempdir("bug")
    env = {"OPENAI_API_KEY": KNOWN_SECRET, "FLEET_QUEUE_MAX_ATTEMPTS": "3"}
    fleet = Fleet(state / "s", {**os.environ, **env})
    fleet.python = str(make_venv_with_broken_adapter(state))
    try:
        fleet.start("--workers", "1")
        yield fleet
    finally:
        fleet.close()
        left = processes_under(state)
        shutil.rmtree(state, ignore_errors=True)
        assert not left, f"processes left behind: {left}"


def _worker_pid(fleet: Fleet) -> int | None:
    return next(p.pid for p in fleet.status().processes if p.worker is not None)


def test_a_summary_that_raises_fails_its_task_and_the_worker_lives_on(
    broken_fleet: Fleet, tmp_path: Path
) -> None:
    worker = _worker_pid(broken_fleet)
    task = broken_fleet.enqueue("--agent", "broken", "--cwd", str(tmp_path), "go")
    shown = broken_fleet.wait_state(task, "succeeded", "failed", timeout=60)
    assert shown["state"] == "failed" and len(shown["executions"]) == 1, shown
    result = shown["result"]
    assert result["failure_class"] == "permanent"
    assert result["reason"].startswith(
        "the 'broken' agent adapter's summary failed reading an output line: ValueError"
    )
    assert "finish failed: RuntimeError: finish is broken too" in result["error"]
    # Every line the agent printed is kept, the ones after the bug too.
    assert [e["payload"] for e in broken_fleet.events(task)] == ["first", "second", "third"]
    assert _worker_pid(broken_fleet) == worker
    assert all(p.restarts == 0 for p in broken_fleet.status().processes)
    # The same worker runs the next task.
    after = broken_fleet.enqueue("next", "--agent", "command", "--", "true")
    assert broken_fleet.wait_state(after, "succeeded", "failed")["state"] == "succeeded"
    # What the bug quoted is masked wherever it went: the result, fleetd's log.
    shown_text = broken_fleet.ctl("show", str(task), "--json").stdout
    assert KNOWN_SECRET not in shown_text and "[REDACTED]" in shown_text
    assert KNOWN_SECRET not in broken_fleet.log()
    assert "summary failed reading an output line" in broken_fleet.log()
