"""Several fleetd nodes on one machine sharing one PostgreSQL queue: each a real fleetd with
its own state directory and FLEET_NODE_NAME; the truth read from PostgreSQL itself.

The test agent prints numbered lines tagged with a fresh run id, appending each to its own
copy first (so the copy is never shorter than what reached stdout), as the soak's does; it
stops early, exit 0, once the copies' directory holds a file named `release`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg

from fleetd.runtime.agent_registry import AgentRegistry
from fleetd.runtime.spool import read_records
from shared import messages as m
from tests.support.fleet import Fleet, short_tempdir
from tests.support.procs import processes_under, session_members

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")

AGENT = r"""
read -r id < /proc/sys/kernel/random/uuid
i=1
while [ "$i" -le "$2" ] && [ ! -e "$1/release" ]; do
  line="{\"run\":\"$id\",\"n\":$i}"
  echo "$line" >> "$1/$id"
  echo "$line"
  sleep "$3"
  i=$((i + 1))
done
exit 0
"""


def node_env(url: str, name: str, **settings: str) -> dict[str, str]:
    """A node's environment: the shared queue, its name, short leases (seconds, not the
    default half minute, so that a lost node's tasks move within the test)."""
    return {
        **os.environ,
        "FLEET_QUEUE_URL": url,
        "FLEET_NODE_NAME": name,
        "FLEET_QUEUE_LEASE_SECONDS": "5",
        "FLEET_WORKER_HEARTBEAT_SECONDS": "0.5",
        "FLEET_WORKER_GRACE_SECONDS": "1",
        "FLEET_QUEUE_RETRY_BACKOFF_SECONDS": "0.1",
        **settings,
    }


def task_lines(count: int, copies: Path, lines: int, pause: float) -> bytes:
    """`fleetctl enqueue --file -` input: `count` command tasks running the test agent."""
    specs = []
    for index in range(count):
        argv = ["sh", "-c", AGENT, "node-agent", str(copies), str(lines), str(pause)]
        specs.append({"prompt": f"multi-node {index}", "agent": "command", "argv": argv})
    return "".join(json.dumps(spec) + "\n" for spec in specs).encode()


def query(url: str, sql: str, args: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(sql, args)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def unfinished(url: str) -> int:
    marks = ",".join(["%s"] * len(TERMINAL))
    sql = f"SELECT count(*) FROM tasks WHERE state NOT IN ({marks})"
    return int(query(url, sql, TERMINAL)[0][0])


def running_on(url: str, node: str) -> list[tuple[int, int]]:
    """(execution, events stored) of the node's running executions."""
    return query(
        url,
        "SELECT e.id, coalesce(s.last_seq, 0) FROM executions e"
        " LEFT JOIN event_streams s ON s.execution_id = e.id"
        " WHERE e.node = %s AND e.outcome = 'running' ORDER BY e.id",
        (node,),
    )


def check_exactly_once(url: str, tasks: int) -> Counter[str]:
    """Every task ended once, in the state of its one terminal execution; none still runs.
    Returns the executions' outcomes per node."""
    outcomes: dict[int, list[str]] = {}
    per_node: Counter[str] = Counter()
    for task, outcome, node in query(
        url, "SELECT task_id, outcome, node FROM executions ORDER BY id"
    ):
        outcomes.setdefault(task, []).append(outcome)
        per_node[f"{node} {outcome}"] += 1
    rows = query(url, "SELECT id, state FROM tasks ORDER BY id")
    assert len(rows) == tasks, rows
    for task, state in rows:
        ran = outcomes.get(task, [])
        assert state in TERMINAL, f"task {task} is {state}: {ran}"
        assert "running" not in ran, f"task {task}: an execution still runs: {ran}"
        assert [o for o in ran if o in TERMINAL] == [state], f"task {task}: {ran}"
        assert ran[-1] == state, f"task {task}: {ran}"
    return per_node


def check_streams(url: str, copies: Path) -> int:
    """Every stream in PostgreSQL gap-free and a prefix of what its agent printed (all of it
    when the run succeeded); the events checked."""
    outcomes = dict(query(url, "SELECT id, outcome FROM executions"))
    checked = 0
    for execution, last_seq in query(url, "SELECT execution_id, last_seq FROM event_streams"):
        rows = query(
            url,
            "SELECT seq, payload FROM events WHERE execution_id = %s ORDER BY seq",
            (execution,),
        )
        assert [seq for seq, _ in rows] == list(range(1, last_seq + 1)), f"gap in {execution}"
        if not rows:
            continue
        run = json.loads(bytes(rows[0][1]))["run"]
        printed = [line.encode() for line in (copies / run).read_text().splitlines()]
        stored = [bytes(payload) for _, payload in rows]
        if outcomes[execution] == "succeeded":
            assert stored == printed, f"execution {execution}"
        else:
            assert stored == printed[: len(stored)], f"execution {execution} is not a prefix"
        checked += len(stored)
    return checked


def spooled(state_dir: Path) -> set[tuple[int, int]]:
    """(execution, seq) of every event in a node's spool files."""
    found: set[tuple[int, int]] = set()
    for path in (state_dir / "spool").glob("*.spool"):
        for record in read_records(path):
            batch = m.RECORDER_REQUESTS.decode(record)
            assert isinstance(batch, m.EventBatch)
            found.update((e.execution, e.seq) for e in batch.events)
    return found


def stored_events(url: str) -> set[tuple[int, int]]:
    return set(query(url, "SELECT execution_id, seq FROM events"))


def kill_host(fleet: Fleet) -> list[int]:
    """SIGKILL every process of a node at once, as a host dying would: fleetd's session, and
    its agents (each in a session of its own). All are stopped first, so none sees another
    die and reacts. Returns the agents' pids."""
    registry = AgentRegistry(fleet.state_dir / "agents")
    agents = [pid for _, pid, _ in registry.leftovers()]
    victims = set(session_members(fleet.pid)) | set(processes_under(fleet.state_dir))
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        for pid in agents:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
    if fleet.proc is not None:
        with contextlib.suppress(Exception):
            fleet.proc.wait(5)
    return agents


def workers_json(fleet: Fleet, *args: str) -> list[dict[str, Any]]:
    return fleet.json("workers", *args)


def env_without(env: Mapping[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


class Nodes:
    """Fleets by node name, in one temporary root; all closed (and checked gone) at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.root = short_tempdir("nodes")
        self.copies = self.root / "copies"
        self.copies.mkdir()
        self.fleets: dict[str, Fleet] = {}

    def start(self, name: str, workers: int = 2, **settings: str) -> Fleet:
        fleet = self.fleets.get(name) or Fleet(
            self.root / name, node_env(self.url, name, **settings)
        )
        self.fleets[name] = fleet
        return fleet.start("--workers", str(workers))

    def enqueue(self, via: str, count: int, lines: int, pause: float) -> None:
        specs = task_lines(count, self.copies, lines, pause)
        self.fleets[via].ctl("enqueue", "--file", "-", input=specs)

    def close(self) -> list[int]:
        for fleet in self.fleets.values():
            fleet.close()
        left = processes_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        return left


@contextlib.contextmanager
def running_nodes(url: str) -> Iterator[Nodes]:
    """Nodes on the queue at `url`, each closed at the end; fails if a process is left."""
    made = Nodes(url)
    try:
        yield made
    finally:
        left = made.close()
    assert not left, f"processes left behind: {left}"
