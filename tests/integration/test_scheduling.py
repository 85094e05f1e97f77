"""Priorities, dependencies, not-before and concurrency limits through a real fleetd and
fleetctl; a limit changed by `fleetctl reload` and by SIGHUP, without a restart."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import messages as m
from shared.errors import RequestFailed
from tests.support.fleet import Fleet, running_fleet, wait_for

pytestmark = pytest.mark.timeout(120)


def appender(log: Path, name: str) -> list[str]:
    """A command agent that appends its name to `log`: the order the tasks ran in."""
    return ["--", "sh", "-c", f"echo {name} >> {log}"]


def gated(gate: Path) -> list[str]:
    """A command agent that runs until `gate` exists."""
    return ["--", "sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done"]


@pytest.fixture
def one_worker(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet("--workers", "1", env=dict(os.environ)) as fleet:
        yield fleet


def test_priority_order_and_a_changed_priority(one_worker: Fleet, tmp_path: Path) -> None:
    fleet, log, gate = one_worker, tmp_path / "order", tmp_path / "gate"
    blocker = fleet.enqueue("hold the worker", *gated(gate))
    fleet.wait_state(blocker, "running")
    low = fleet.enqueue("low", "--priority", "-1", *appender(log, "low"))
    plain = fleet.enqueue("plain", *appender(log, "plain"))
    high = fleet.enqueue("high", "--priority", "5", *appender(log, "high"))
    bumped = fleet.enqueue("bumped", *appender(log, "bumped"))
    assert fleet.json("priority", str(bumped), "9")["priority"] == 9
    assert fleet.show(bumped)["priority"] == 9
    fleet.ctl("priority", str(low), "-3")  # a negative value, not an option
    assert fleet.show(low)["priority"] == -3
    gate.touch()
    fleet.wait_state(low, "succeeded")
    assert log.read_text().split() == ["bumped", "high", "plain", "low"]
    refused = fleet.ctl("priority", str(high), "1", check=False)
    assert refused.returncode == 1 and "only a queued task" in refused.stderr
    for task in (plain, high):
        assert fleet.show(task)["state"] == "succeeded"


def test_after_waits_and_a_failure_cancels_the_dependents(
    one_worker: Fleet, tmp_path: Path
) -> None:
    fleet, log, gate = one_worker, tmp_path / "order", tmp_path / "gate"
    first = fleet.enqueue("first", *gated(gate))
    fleet.wait_state(first, "running")
    dependent = fleet.enqueue(
        "second", "--priority", "9", "--after", str(first), *appender(log, "b")
    )
    fleet.enqueue("other", *appender(log, "a"))
    doomed_parent = fleet.enqueue("fails", "--priority", "-5", "--", "sh", "-c", "exit 3")
    doomed = fleet.enqueue("never", "--after", str(doomed_parent), *appender(log, "never"))
    anyway = fleet.enqueue(
        "anyway", "--after", str(doomed_parent), "--after-any", *appender(log, "anyway")
    )
    assert fleet.show(dependent)["waiting"] == 1
    human = fleet.ctl("show", str(dependent)).stdout
    assert f"queued (waiting for 1 of tasks {first} to end)" in human
    assert f"{first} (once they succeeded)" in human
    gate.touch()
    fleet.wait_state(anyway, "succeeded")
    # The dependent is released in the transaction that closes `first`, and its priority
    # puts it first; the failing task runs last but one, and `anyway` after it.
    assert log.read_text().split() == ["b", "a", "anyway"]
    shown = fleet.wait_state(doomed, "cancelled")
    assert f"task {doomed_parent}" in shown["result"]["reason"]
    assert "cancelled" in fleet.ctl("show", str(doomed)).stdout


def test_an_unknown_after_is_refused(one_worker: Fleet) -> None:
    refused = one_worker.ctl("enqueue", "x", "--after", "999", "--", "true", check=False)
    assert refused.returncode == 2 and "no such task" in refused.stderr


def test_not_before_waits_for_its_time(one_worker: Fleet, tmp_path: Path) -> None:
    fleet, log = one_worker, tmp_path / "order"
    later = fleet.enqueue("later", "--not-before", "+1d", *appender(log, "later"))
    now = fleet.enqueue("now", *appender(log, "now"))
    fleet.wait_state(now, "succeeded")
    shown = fleet.show(later)
    assert shown["state"] == "queued" and shown["not_before"] is not None
    assert "queued (not before " in fleet.ctl("show", str(later)).stdout
    line = b'{"prompt": "filed", "argv": ["true"], "not_before": "2999-01-01T00:00:00Z"}\n'
    filed = int(fleet.ctl("enqueue", "--file", "-", input=line).stdout)
    assert fleet.show(filed)["not_before"] == "2999-01-01T00:00:00.000000Z"
    bad = fleet.ctl("enqueue", "x", "--not-before", "tomorrow", "--", "true", check=False)
    assert bad.returncode == 2 and "RFC 3339" in bad.stderr


def test_a_full_limit_skips_its_tasks_and_a_reload_changes_it(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text('[limits]\n"label:team=web" = 0\n')
    env = {**os.environ, "FLEET_CONFIG": str(config)}
    log = tmp_path / "order"
    with running_fleet("--workers", "1", env=env) as fleet:
        web = fleet.enqueue("web", "--label", "team=web", *appender(log, "web"))
        other = fleet.enqueue("other", *appender(log, "other"))
        fleet.wait_state(other, "succeeded")  # enqueued after web, yet not blocked by it
        assert fleet.show(web)["state"] == "queued"
        assert "limit label:team=web: 0 of 0 running (full)" in fleet.ctl("status").stdout
        config.write_text('[limits]\n"label:team=web" = 1\n')
        assert "reloaded" in fleet.ctl("reload").stdout
        fleet.wait_state(web, "succeeded")
        assert log.read_text().split() == ["other", "web"]
        config.write_text('[limits]\n"label:team=web" = 5\n')
        os.kill(fleet.pid, signal.SIGHUP)
        wait_for(
            lambda: (
                [(x.selector, x.limit) for x in fleet.status().schedule.limits]
                == [("label:team=web", 5)]
            ),
            20,
            what="SIGHUP to reload the limit",
        )
        config.write_text('[limits]\n"nonsense" = 5\n')
        # Asked directly: fleetctl reads the same file (for the state directory) and would
        # refuse it itself.
        with pytest.raises(RequestFailed, match="not a selector"):
            fleet.request(m.Reload())
        assert fleet.status().schedule.limits[0].limit == 5  # the old limits stay
