"""Several fleetd nodes sharing one PostgreSQL queue (real processes, separate state
directories, distinct FLEET_NODE_NAME, the session's test cluster), and what each fault does.

The truth is read from PostgreSQL: tasks, executions, events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleetd.runtime.agent_registry import AgentRegistry
from fleetd.web.streams import STATE_CHECK_SECONDS
from tests.support.fleet import Fleet, wait_for
from tests.support.netns import listening_on, network_namespace
from tests.support.nodes import (
    Nodes,
    check_exactly_once,
    check_streams,
    kill_host,
    node_env,
    query,
    running_nodes,
    running_on,
    spooled,
    stored_events,
    unfinished,
)
from tests.support.postgres import PASSWORD, PgCluster
from tests.support.procs import is_alive
from tests.support.web import WebFleet

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def nodes(pg_url: str) -> Iterator[Nodes]:
    with running_nodes(pg_url) as made:
        yield made


def wait_all_ended(nodes: Nodes, timeout: float) -> None:
    def ended() -> bool:
        return unfinished(nodes.url) == 0

    try:
        wait_for(ended, timeout, 0.5, "every task to end")
    except AssertionError as stalled:
        logs = "\n".join(f"--- {n} ---\n{f.log()[-3000:]}" for n, f in nodes.fleets.items())
        rows = query(nodes.url, "SELECT id, task_id, node, worker, outcome FROM executions")
        raise AssertionError(f"{stalled}\nexecutions: {rows}\n{logs}") from stalled


@pytest.mark.timeout(360)
def test_a_node_killed_mid_work_loses_nothing(nodes: Nodes) -> None:
    tasks = 12
    for name in ("a", "b", "c"):
        nodes.start(name)
    nodes.enqueue("b", tasks, lines=12, pause=0.25)
    # Mid-work: node a runs something whose first events are already in PostgreSQL.
    wait_for(
        lambda: any(events for _, events in running_on(nodes.url, "a")),
        60,
        0.1,
        "node a to run a task with events stored",
    )
    agents = kill_host(nodes.fleets["a"])
    assert agents and not any(is_alive(pid) for pid in agents)
    in_spool = spooled(nodes.fleets["a"].state_dir)
    lost = [e for e, _ in running_on(nodes.url, "a")]
    assert lost

    wait_all_ended(nodes, 180)  # by b and c alone
    per_node = check_exactly_once(nodes.url, tasks)
    assert per_node["a lost"] == len(lost), per_node
    assert per_node["b succeeded"] and per_node["c succeeded"], per_node

    # The host comes back: its recorder takes in its spool; nothing of its own still runs.
    nodes.start("a")
    wait_for(lambda: in_spool <= stored_events(nodes.url), 60, 0.2, "a's spool in PostgreSQL")
    wait_for(lambda: not list((nodes.fleets["a"].state_dir / "spool").iterdir()), 30, 0.2)
    assert running_on(nodes.url, "a") == []
    assert [w["state"] for w in nodes.fleets["a"].json("workers", "--node", "a")] == [
        "idle",
        "idle",
    ]
    assert check_streams(nodes.url, nodes.copies) > 0
    # Any node reads any task's events: c's fleetctl, a task b ran.
    [(task, execution)] = query(
        nodes.url, "SELECT task_id, id FROM executions WHERE node = 'b' ORDER BY id LIMIT 1"
    )
    shown = nodes.fleets["c"].events(task)
    assert [e["seq"] for e in shown if e["execution"] == execution][:3] == [1, 2, 3]
    # Any node shows every node's workers, as of each node's last beat (a node beats at every
    # lease check, once a second: the restarted a's first beat may predate its workers' Ready),
    # and fleetctl never prints the URL's password.
    wait_for(
        lambda: {"a", "b", "c"} <= {w["node"] for w in nodes.fleets["c"].json("workers")},
        10,
        0.2,
        "node c to show the workers of a, b and c",
    )
    shown = nodes.fleets["c"].ctl("workers")
    assert PASSWORD not in shown.stdout + shown.stderr
    for fleet in nodes.fleets.values():
        assert PASSWORD not in fleet.log()


@pytest.mark.timeout(300)
def test_postgres_restarted_mid_work_loses_nothing_and_crashes_nothing(
    nodes: Nodes, pg_cluster: PgCluster
) -> None:
    tasks = 10
    for name in ("a", "b"):
        nodes.start(name)
    nodes.enqueue("a", tasks, lines=10, pause=0.2)
    wait_for(
        lambda: running_on(nodes.url, "a") and running_on(nodes.url, "b"),
        60,
        0.1,
        "both nodes to run tasks",
    )
    restarts_before = {n: _restarts(f) for n, f in nodes.fleets.items()}
    pg_cluster.restart(mode="fast", down_seconds=2.0)
    wait_all_ended(nodes, 200)
    check_exactly_once(nodes.url, tasks)
    assert query(nodes.url, "SELECT DISTINCT state FROM tasks") == [("succeeded",)]
    # No child crashed over it (each waited the outage out), let alone looped.
    assert {n: _restarts(f) for n, f in nodes.fleets.items()} == restarts_before
    wait_for(lambda: not _spools_left(nodes), 30, 0.2, "the spools to be taken in")
    assert check_streams(nodes.url, nodes.copies) > 0


def _restarts(fleet: Fleet) -> dict[str, int]:
    return {p.role: p.restarts for p in fleet.status().processes}


def _spools_left(nodes: Nodes) -> list[Path]:
    return [p for f in nodes.fleets.values() for p in (f.state_dir / "spool").iterdir()]


@pytest.mark.timeout(300)
def test_a_node_cut_off_from_the_database_stops_its_agents_and_its_tasks_run_elsewhere(
    nodes: Nodes, pg_cluster: PgCluster
) -> None:
    tasks = 4
    with network_namespace() as ns, listening_on(pg_cluster, ns.host_ip, f"{ns.host_ip}/30"):
        cut_url = nodes.url.replace("@127.0.0.1:", f"@{ns.host_ip}:")
        cut = Fleet(nodes.root / "cut", node_env(cut_url, "cut"))
        nodes.fleets["cut"] = cut
        cut.start("--workers", "2", launcher=ns.launcher())
        # Alone, the cut-off node claims two tasks; the other node starts once they run.
        # Agents that run until released: only an end from outside stops them early.
        nodes.enqueue("cut", tasks, lines=2000, pause=0.25)
        wait_for(
            lambda: sum(1 for _, events in running_on(nodes.url, "cut") if events) == 2,
            60,
            0.1,
            "the node to run two tasks",
        )
        nodes.start("b")
        held = [e for e, _ in running_on(nodes.url, "cut")]
        agents = [pid for _, pid, _ in AgentRegistry(cut.state_dir / "agents").leftovers()]
        assert len(agents) == 2

        ns.link(up=False)
        # Its leases expire: the other node takes the tasks over...
        wait_for(
            lambda: (
                query(
                    nodes.url,
                    "SELECT count(*) FROM executions WHERE id = ANY(%s) AND outcome = 'lost'",
                    (held,),
                )[0][0]
                == 2
            ),
            60,
            0.2,
            "the cut-off node's executions to be lost",
        )
        # ... and the node, still cut off, ends its own agents (it cannot hear any fence).
        try:
            wait_for(lambda: not any(is_alive(pid) for pid in agents), 30, 0.2, "its agents")
        except AssertionError as late:
            raise AssertionError(f"{late}\n{cut.log()[-6000:]}") from late
        assert "longer than a lease" in cut.log()
        (nodes.copies / "release").touch()  # the reruns elsewhere may end now
        wait_all_ended(nodes, 200)
        ns.link(up=True)  # its late reports now reach the queue, and the fence refuses them
        wait_for(lambda: _idle(cut), 60, 0.5, "the node to be idle again")

        check_exactly_once(nodes.url, tasks)
        assert query(
            nodes.url, "SELECT DISTINCT outcome FROM executions WHERE id = ANY(%s)", (held,)
        ) == [("lost",)]
        assert query(nodes.url, "SELECT DISTINCT state FROM tasks") == [("succeeded",)]
        rerun = query(
            nodes.url,
            "SELECT DISTINCT e.node FROM executions e JOIN executions h ON h.task_id = e.task_id"
            " WHERE h.id = ANY(%s) AND e.outcome = 'succeeded'",
            (held,),
        )
        assert rerun == [("b",)]
        cut.close()  # inside the namespace's lifetime


def _idle(fleet: Fleet) -> bool:
    try:
        workers = fleet.json("workers", "--node", "cut")
    except AssertionError:
        return False
    return bool(workers) and all(w["state"] == "idle" for w in workers)


@pytest.mark.timeout(120)
def test_a_dashboard_streams_a_task_another_node_runs(nodes: Nodes) -> None:
    """Another node's events are not on this node's feed: its dashboard's stream reads them
    from the shared store as the run goes on, not only once the task has ended."""
    nodes.start("b", workers=1)
    nodes.enqueue("b", 1, lines=2000, pause=0.25)  # runs until released
    wait_for(lambda: any(n for _, n in running_on(nodes.url, "b")), 60, 0.1, "b to run it")
    nodes.start("a", workers=1, FLEET_WEB_LISTEN="127.0.0.1:0")
    web = WebFleet(nodes.fleets["a"])
    try:
        [(task,)] = query(nodes.url, "SELECT id FROM tasks")
        headers = {"accept": "text/event-stream"}
        seen: list[int] = []
        batches = 0
        timeout = httpx.Timeout(30, read=STATE_CHECK_SECONDS * 3)
        path = f"/api/v1/tasks/{task}/events"
        with web.api.stream("GET", path, headers=headers, timeout=timeout) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ["):
                    seen += [e["seq"] for e in json.loads(line[6:])]
                    batches += 1
                    if batches == 3:
                        break  # stored ones, then later ones twice while the task ran on b
        assert seen == list(range(1, seen[-1] + 1))
        assert query(nodes.url, "SELECT state FROM tasks") == [("running",)]
    finally:
        web.close()
        (nodes.copies / "release").touch()
