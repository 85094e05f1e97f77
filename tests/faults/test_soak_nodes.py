"""The soak on two nodes sharing one PostgreSQL queue: children of either node, and now and then
a whole node (its session and its agents, as a host dying), are killed at random moments.

Afterwards PostgreSQL alone must prove that nothing was lost: every task ended exactly once
(or failed with every attempt lost), every stream is gap-free and equal to what its agent
printed (a prefix if its run was cut), every spool was taken in, and no process is left.

CI runs a small soak; AGENT_FLEET_SOAK_NODES_TASKS and AGENT_FLEET_SOAK_SEED make it longer or
replay one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import Fleet, wait_for
from tests.support.nodes import (
    TERMINAL,
    Nodes,
    check_streams,
    kill_host,
    query,
    running_nodes,
    unfinished,
)
from tests.support.procs import session_members, title

TASKS = int(os.environ.get("AGENT_FLEET_SOAK_NODES_TASKS", "60"))
SEED = int(os.environ.get("AGENT_FLEET_SOAK_SEED", str(random.randrange(1 << 30))))
MAX_ATTEMPTS = 5

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300 + 2 * TASKS)]


@pytest.fixture
def nodes(pg_url: str) -> Iterator[Nodes]:
    with running_nodes(pg_url) as made:
        yield made


SETTINGS = {
    "FLEET_QUEUE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "FLEET_SUPERVISOR_CRASH_LOOP_RESTARTS": "100000",  # random kills are the test
    "FLEET_SUPERVISOR_RESTART_BACKOFF_MAX": "0.5",
}


def plan(rng: random.Random, names: list[str]) -> list[tuple[str, str]]:
    """What to kill, in a random order: each node once whole, the rest its children."""
    kills = [(name, "host") for name in names]
    for _ in range(max(6, TASKS // 6)):
        victim = rng.choices(["broker", "recorder", "worker"], weights=[2, 2, 5])[0]
        kills.append((rng.choice(names), victim))
    rng.shuffle(kills)
    return kills


def strike(rng: random.Random, nodes: Nodes, name: str, victim: str, killed: Counter[str]) -> None:
    fleet = nodes.fleets[name]
    if victim == "host":
        kill_host(fleet)
        fleet.start("--workers", "2")
        killed[f"{name} host"] += 1
        return
    roles = [pid for pid, role in _children(fleet) if role.startswith(victim)]
    if roles:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rng.choice(roles), signal.SIGKILL)
            killed[f"{name} {victim}"] += 1


def _children(fleet: Fleet) -> list[tuple[int, str]]:
    found = []
    for pid in session_members(fleet.pid):
        name = title(pid) or ""
        if name.startswith("fleetd: ") and name != "fleetd: supervisor":
            found.append((pid, name.removeprefix("fleetd: ")))
    return found


def check_tasks(url: str) -> Counter[str]:
    """Every task ended exactly once in a terminal state, or failed out of attempts with each
    attempt lost; attempts add up; no execution still runs."""
    runs: dict[int, list[str]] = {}
    for task, outcome in query(url, "SELECT task_id, outcome FROM executions ORDER BY id"):
        runs.setdefault(task, []).append(outcome)
    states: Counter[str] = Counter()
    rows = query(url, "SELECT id, state, attempts, max_attempts FROM tasks")
    assert len(rows) == TASKS
    for task, state, attempts, max_attempts in rows:
        ran = runs.get(task, [])
        states[state] += 1
        assert state in TERMINAL, f"task {task} left {state}: {ran}"
        assert "running" not in ran, f"task {task}: an execution still running"
        assert attempts == len([o for o in ran if o != "interrupted"]), (task, ran)
        ended = [o for o in ran if o in TERMINAL]
        if ended:
            assert ended == [state] and ran[-1] == state, f"task {task}: {ran}"
        else:
            assert state == "failed" and attempts == max_attempts, f"task {task}: {ran}"
    return states


def test_soak_on_two_nodes_with_random_kills_loses_nothing(nodes: Nodes) -> None:
    rng = random.Random(SEED)
    started = time.monotonic()
    killed: Counter[str] = Counter()
    for name in ("a", "b"):
        nodes.start(name, **SETTINGS)
    specs = []
    for index in range(TASKS):
        lines = rng.randint(1, 60)
        argv = ["sh", "-c", _AGENT, "soak", str(nodes.copies), str(lines), "0.25"]
        specs.append({"prompt": f"soak {index}", "agent": "command", "argv": argv})
    feed = "".join(json.dumps(spec) + "\n" for spec in specs).encode()
    nodes.fleets["a"].ctl("enqueue", "--file", "-", input=feed)
    kills = plan(rng, ["a", "b"])
    while kills and unfinished(nodes.url):
        time.sleep(rng.uniform(0.2, 0.8))  # a random moment to strike, not a wait
        strike(rng, nodes, *kills.pop(), killed)
    try:
        wait_for(lambda: unfinished(nodes.url) == 0, 120 + TASKS, 0.5, "tasks to end")
        wait_for(lambda: not _spools(nodes), 60, 0.5, "every spool taken in")
    except AssertionError as stalled:
        rows = query(nodes.url, "SELECT id, state FROM tasks WHERE state = 'running' LIMIT 5")
        raise AssertionError(f"seed={SEED} kills {dict(killed)} stuck {rows}") from stalled
    states = check_tasks(nodes.url)
    stored = check_streams(nodes.url, nodes.copies)
    print(
        f"\nsoak on two nodes seed={SEED}: {TASKS} tasks {dict(states)}, {stored} events "
        f"checked, kills {dict(killed)}, {time.monotonic() - started:.0f} s"
    )


def _spools(nodes: Nodes) -> list[Path]:
    return [p for f in nodes.fleets.values() for p in (f.state_dir / "spool").glob("*.spool")]


# The soak's agent: numbered lines, each appended to its own copy first; exits 0 or 3.
_AGENT = r"""
read -r id < /proc/sys/kernel/random/uuid
i=1
while [ "$i" -le "$2" ]; do
  line="{\"run\":\"$id\",\"n\":$i}"
  echo "$line" >> "$1/$id"
  echo "$line"
  [ $((i % 8)) -eq 0 ] && sleep "$3"
  i=$((i + 1))
done
[ $((i % 5)) -eq 0 ] && exit 3
exit 0
"""
