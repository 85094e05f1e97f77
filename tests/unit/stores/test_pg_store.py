"""What only the PostgreSQL store has: several brokers (each its own store and connection) on
one queue, nodes, the lease token as a fence, NOTIFY wake-ups, and outages waited out.

The semantics both stores share are tested once for both (tests/unit/broker/, `store`).
"""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator

import psycopg
import pytest
from loguru import logger

from fleetd.broker.scheduling import Gate, limits_of
from fleetd.stores.postgres import PgQueueStore
from fleetd.stores.postgres.schema import MIGRATIONS
from fleetd.stores.protocol import QueueStoreAPI
from shared.models import ExecutionResult, TaskSpec
from tests.support.fleet import wait_for
from tests.support.postgres import PASSWORD, PgCluster

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

LEASE = 30_000_000
BROKERS = 8


@pytest.fixture
def open_node(pg_url: str) -> Iterator:
    """Opens stores on the test's database, one per node (or per broker), closed after."""
    opened: list[PgQueueStore] = []

    def open_one(node: str = "node-a", listen: bool = True) -> PgQueueStore:
        store = PgQueueStore.open(pg_url, 3, node=node, wait=False, listen=listen)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def enqueue(store: PgQueueStore, count: int, now: int = 1, **fields) -> list[int]:
    specs = [TaskSpec(prompt=f"t{i}", **fields) for i in range(count)]
    return [task for task, _ in store.enqueue(specs, now)]


def test_it_is_the_seams_store(open_node) -> None:
    assert isinstance(open_node(), QueueStoreAPI)


def test_eight_brokers_claiming_at_once_take_every_task_exactly_once(open_node) -> None:
    tasks = enqueue(open_node("enqueuer", listen=False), 240)
    stores = [open_node(f"node-{i}", listen=False) for i in range(BROKERS)]
    claimed: list[list[int]] = [[] for _ in stores]
    start = threading.Barrier(BROKERS)

    def claim_all(index: int) -> None:
        start.wait()
        while (claim := stores[index].claim(f"worker-{index}", 10, LEASE)) is not None:
            claimed[index].append(claim.task)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(BROKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [task for mine in claimed for task in mine]
    assert sorted(every) == tasks, "each task claimed once, none left"
    assert sum(1 for mine in claimed if mine) > 1, "the claims were spread over brokers"


def test_a_limit_holds_across_brokers_claiming_at_once(open_node) -> None:
    enqueue(open_node("enqueuer", listen=False), 40)
    stores = [open_node(f"node-{i}", listen=False) for i in range(BROKERS)]
    gate = Gate(limits_of({"agent:codex": 3}))
    claims: list[int] = []
    start = threading.Barrier(BROKERS)

    def claim_all(index: int) -> None:
        start.wait()
        while (claim := stores[index].claim("w", 10, LEASE, gate)) is not None:
            claims.append(claim.task)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(BROKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(claims) == 3, "never more running than the limit, whichever node claims"


def test_a_lease_taken_over_fences_the_old_holder(open_node) -> None:
    node_a, node_b = open_node("node-a"), open_node("node-b")
    [task] = enqueue(node_a, 1)
    first = node_a.claim("worker-1", 10, LEASE)
    assert first is not None and first.lease > 0
    # node-a is cut off: its lease runs out and node-b's broker requeues and claims the task.
    [closed] = node_b.lose_expired(10 + LEASE + 1)
    assert closed.task == task and closed.task_state == "queued"
    second = node_b.claim("worker-1", 20 + LEASE, LEASE)
    assert second is not None and second.task == task and second.lease != first.lease
    late = 30 + LEASE
    assert not node_a.renew(first.execution, "worker-1", late, LEASE, lease=first.lease)
    done = ExecutionResult(exit_code=0)
    assert node_a.finish(first.execution, "succeeded", done, late, lease=first.lease) == (
        None,
        None,
    )
    node_a.mark_started(first.execution, late, 4242, lease=first.lease)
    node_a.store_started()
    # A token that is not the execution's own is refused even while it runs.
    assert not node_b.renew(second.execution, "worker-1", late, LEASE, lease=first.lease)
    assert node_b.finish(second.execution, "failed", done, late, lease=first.lease) == (None, None)
    view = node_b.get_task(task)
    assert view is not None and view.state == "running"
    assert [e.outcome for e in view.executions] == ["lost", "running"]
    assert view.executions[0].started_at is None, "the fenced start was not written"
    assert node_b.renew(second.execution, "worker-1", late, LEASE, lease=second.lease)
    state, _ = node_b.finish(second.execution, "succeeded", done, late, lease=second.lease)
    assert state == "succeeded"


def test_a_nodes_recovery_and_lost_workers_touch_only_its_own_executions(open_node) -> None:
    node_a, node_b = open_node("node-a"), open_node("node-b")
    enqueue(node_a, 4)
    a1 = node_a.claim("worker-1", 10, LEASE)
    a2 = node_a.claim("worker-2", 10, LEASE)
    b1 = node_b.claim("worker-1", 10, LEASE)
    b2 = node_b.claim("worker-2", 10, LEASE)
    assert a1 and a2 and b1 and b2
    # node-b's worker-1 restarted: node-a's worker-1 (the same name) keeps its task.
    assert [c.execution for c in node_b.lose_worker("worker-1", "restarted", 20)] == [b1.execution]
    assert node_a.running_of("worker-1") == [(a1.execution, a1.task, 10)]
    # node-a's fleetd restarts after a crash: only its own runs are lost.
    recovered = node_a.lose_all_running("fleetd stopped", 30)
    assert sorted(c.execution for c in recovered) == sorted([a1.execution, a2.execution])
    assert node_b.running_of("worker-2") == [(b2.execution, b2.task, 10)]
    assert node_b.renew(b2.execution, "worker-2", 40, LEASE, lease=b2.lease)


def test_an_enqueue_on_one_node_wakes_the_others_listener(open_node) -> None:
    idle, busy = open_node("node-idle"), open_node("node-busy")
    assert not idle.drain_wakeups(), "nothing yet"
    fd = idle.wakeup_fd()
    assert fd is not None
    enqueue(busy, 1)
    readable, _, _ = select.select([fd], [], [], 30)
    assert readable == [fd], "the NOTIFY woke the idle broker's poll"
    assert idle.drain_wakeups()
    assert not idle.drain_wakeups(), "drained"
    enqueue(idle, 1)  # its own enqueue: no news for itself
    select.select([fd], [], [], 5)
    assert not idle.drain_wakeups()
    claim = busy.claim("w", 10, LEASE)
    assert claim is not None
    busy.finish(claim.execution, "succeeded", ExecutionResult(), 20)  # a limit may have room
    select.select([fd], [], [], 30)
    assert idle.drain_wakeups()


def test_a_database_restart_is_waited_out_in_one_log_line(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    store = PgQueueStore.open(pg_url, 3, node="node-a")  # waits out outages (the default)
    try:
        enqueue(store, 1)
        pg_cluster.stop(mode="immediate")  # a crash, with the connections dropped
        restarter = threading.Timer(2.0, pg_cluster.start)
        restarter.start()
        try:
            assert len(enqueue(store, 1)) == 1, "the write after the outage went through"
        finally:
            restarter.join()
        assert store.counts() == {"queued": 2}
        # The LISTEN connection died too: draining reconnects it (news: some may be missed)...
        wait_for(store.drain_wakeups, 30, what="the listener to reconnect")
        fd = store.wakeup_fd()
        assert fd is not None
        # ... and another node's enqueue wakes it again.
        other = PgQueueStore.open(pg_url, 3, node="node-b", wait=False, listen=False)
        enqueue(other, 1)
        other.close()
        assert select.select([fd], [], [], 30)[0] == [fd]
        assert store.drain_wakeups()
    finally:
        store.close()
        logger.remove(sink)
    waits = [line for line in lines if "waiting for it" in line]
    assert len(waits) == 1, lines
    assert any("reachable again" in line for line in lines), lines
    assert not [line for line in lines if PASSWORD in line]


def test_an_unreachable_database_is_an_error_without_its_password(pg_cluster: PgCluster) -> None:
    from fleetd.stores.protocol import StoreUnavailable

    url = pg_cluster.url("no_such_database")
    with pytest.raises(StoreUnavailable) as caught:
        PgQueueStore.open(url, 3, wait=False)
    assert "no_such_database" in str(caught.value) and PASSWORD not in str(caught.value)
    wrong = url.replace(PASSWORD, "wrong-" + PASSWORD)
    with pytest.raises(StoreUnavailable) as caught:
        PgQueueStore.open(wrong, 3, wait=False)
    assert "password authentication failed" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_brokers_starting_together_migrate_once(pg_url: str) -> None:
    errors: list[BaseException] = []

    def open_close(index: int) -> None:
        try:
            PgQueueStore.open(pg_url, 3, node=f"n{index}", wait=False, listen=False).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_close, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with psycopg.connect(pg_url) as conn:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
    assert versions == [(n,) for n in range(1, len(MIGRATIONS) + 1)]


def test_a_schema_newer_than_this_fleetd_is_refused(pg_url: str) -> None:
    from fleetd.stores.postgres.schema import SchemaTooNew

    PgQueueStore.open(pg_url, 3, wait=False, listen=False).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(SchemaTooNew, match="upgrade agent-fleet"):
        PgQueueStore.open(pg_url, 3, wait=False, listen=False)


def test_a_cancel_on_one_node_stops_the_run_on_another_at_its_next_heartbeat(open_node) -> None:
    node_a, node_b = open_node("node-a"), open_node("node-b")
    [task] = enqueue(node_a, 1)
    claim = node_b.claim("worker-1", 10, LEASE)
    assert claim is not None
    assert node_b.renew(claim.execution, "worker-1", 15, LEASE, lease=claim.lease)
    # node-a's broker cannot reach node-b's worker: it only marks the task.
    assert node_a.cancel(task, 20) == ("running", claim.execution, "worker-1")
    assert not node_b.renew(claim.execution, "worker-1", 25, LEASE, lease=claim.lease)
    # node-b's broker sends its worker CancelExecution; the worker's result closes the task.
    state, _ = node_b.finish(claim.execution, "cancelled", ExecutionResult(), 30, lease=claim.lease)
    assert state == "cancelled"


def test_an_idle_broker_woken_by_another_nodes_enqueue_assigns_at_once(open_node, tmp_path) -> None:
    """The broker side of LISTEN/NOTIFY: without the wake-up, an idle broker that found nothing
    claimable would look again only at its next lease check (a second later)."""
    from fleetd.broker.logic import Broker
    from shared import messages as m
    from shared.config import load_config

    store_a, store_b = open_node("node-a"), open_node("node-b")
    broker_b = Broker(store_b, load_config({"HOME": str(tmp_path)}))
    broker_b.step(0)  # its first lease check: the next is due at 1 s
    assert broker_b.handle(b"w1", b"", m.Ready(worker="w1", pid=100), 10) == []  # nothing yet
    enqueue(store_a, 1)  # on node-a, by fleetctl there
    assert broker_b.step(20) == [], "without news the idle broker does not look again"
    fd = store_b.wakeup_fd()
    assert fd is not None and select.select([fd], [], [], 30)[0] == [fd]
    assert store_b.drain_wakeups()
    broker_b.wake()  # what broker/process.py does when drain_wakeups says so
    [out] = broker_b.step(30)
    assert isinstance(out.message, m.Assign) and out.peer == b"w1"


def test_a_dependency_finishing_on_another_node_while_its_dependent_is_enqueued(
    open_node,
) -> None:
    """Node B finishes task X while node A enqueues Y --after X: whichever commits first, Y
    is released (or cancelled), never left waiting for a settle that already ran."""
    node_a, node_b = open_node("node-a", listen=False), open_node("node-b", listen=False)
    done = ExecutionResult(exit_code=0)
    dependents = []
    for round_ in range(40):
        [after] = enqueue(node_b, 1, now=round_, priority=10)  # claimed before the dependents
        claim = node_b.claim("w", round_, LEASE)
        assert claim is not None and claim.task == after
        start = threading.Barrier(2)

        def finish(execution: int, now: int, start: threading.Barrier) -> None:
            start.wait()
            node_b.finish(execution, "succeeded", done, now)

        thread = threading.Thread(target=finish, args=(claim.execution, round_, start))
        thread.start()
        start.wait()
        dependents += enqueue(node_a, 1, now=round_, after=[after])
        thread.join(30)
    stuck = [t for t in dependents if (view := node_a.get_task(t)) and view.waiting]
    assert stuck == [], "dependents left waiting for a task that had already ended"


@pytest.mark.parametrize("reached", [True, False], ids=["commit-applied", "commit-not-applied"])
def test_a_commit_whose_reply_is_lost_is_applied_exactly_once(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, reached: bool
) -> None:
    """The connection dies at the commit: either after the server committed (its reply lost)
    or before. Either way the enqueue (no idempotency key) is stored once, and its id said."""
    from fleetd.stores.postgres.database import Database

    store = PgQueueStore.open(pg_url, 3, node="node-a", wait=True, listen=False)
    real_commit = Database._commit
    lost: list[bool] = []

    def lossy_commit(conn: psycopg.Connection) -> None:
        if not lost:
            lost.append(True)
            if reached:
                real_commit(conn)
            conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        real_commit(conn)

    monkeypatch.setattr(Database, "_commit", staticmethod(lossy_commit))
    try:
        [(task, created)] = store.enqueue([TaskSpec(prompt="once")], 1)
    finally:
        store.close()
    assert lost and created
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute("SELECT id, spec::json->>'prompt' FROM tasks").fetchall()
    assert stored == [(task, "once")]
