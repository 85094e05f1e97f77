"""`python -m bench.store_rates [--tasks N]`: the queue stores' own rates, without fleetd.

Enqueues per second (one task a transaction, and 100 a transaction), claims per second, and
claim-then-finish cycles per second (what a broker does per task), for the SQLite store on a
temp file and the PostgreSQL store on a cluster of its own (tests/support/postgres.py:
loopback, fsync on, synchronous_commit on), and claims per second by 4 PostgreSQL brokers
at once (threads, each its own store and connection). Medians of 3 runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fleetd.broker.store import QueueStore
from fleetd.stores.postgres import PgQueueStore
from fleetd.stores.protocol import QueueStoreAPI
from shared.models import ExecutionResult, TaskSpec
from tests.support.postgres import start_cluster

LEASE = 30_000_000
DONE = ExecutionResult(exit_code=0)


def rate(count: int, work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def one_store(store: QueueStoreAPI, tasks: int) -> dict[str, float]:
    specs = [TaskSpec(prompt=f"task {i}", agent="command", argv=["true"]) for i in range(tasks)]
    out = {
        "enqueue, 1 a transaction": rate(
            tasks, lambda: [store.enqueue([spec], 1) for spec in specs]
        ),
        "enqueue, 100 a transaction": rate(
            tasks, lambda: [store.enqueue(specs[i : i + 100], 1) for i in range(0, tasks, 100)]
        ),
    }
    out["claim"] = rate(tasks, lambda: [store.claim("w", 10, LEASE) for _ in range(tasks)])

    def cycles() -> None:  # the 2nd batch: finish one, claim the next, in one transaction
        claim = store.claim("w", 20, LEASE)
        while claim is not None:
            _, claim = store.finish(claim.execution, "succeeded", DONE, 30, "w", LEASE)

    out["claim + finish"] = rate(tasks, cycles)
    return out


def many_brokers(url: str, tasks: int, brokers: int) -> float:
    stores = [PgQueueStore.open(url, 3, node=f"n{i}", listen=False) for i in range(brokers)]
    stores[0].enqueue([TaskSpec(prompt=f"p{i}") for i in range(tasks)], 1)
    start = threading.Barrier(brokers + 1)

    def claim_all(store: PgQueueStore) -> None:
        start.wait()
        while store.claim("w", 10, LEASE) is not None:
            pass

    threads = [threading.Thread(target=claim_all, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    for store in stores:
        store.close()
    return tasks / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_rates")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cluster = start_cluster()
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                sqlite = QueueStore.open(Path(tmp) / "q.db", 3)
                for key, value in one_store(sqlite, args.tasks).items():
                    results.setdefault(key, {}).setdefault("sqlite", []).append(value)
                sqlite.close()
            name = cluster.create_database()
            pg = PgQueueStore.open(cluster.url(name), 3, listen=False)
            for key, value in one_store(pg, args.tasks).items():
                results.setdefault(key, {}).setdefault("postgresql", []).append(value)
            pg.close()
            name = cluster.create_database()
            value = many_brokers(cluster.url(name), args.tasks, 4)
            results.setdefault("claim, 4 brokers at once", {}).setdefault("postgresql", []).append(
                value
            )
    finally:
        cluster.destroy()
    print(f"| per second ({args.tasks} tasks, median of {args.runs}) | SQLite | PostgreSQL |")
    print("|---|---|---|")
    for key, by_store in results.items():
        cells = [
            f"{statistics.median(by_store[s]):,.0f}" if s in by_store else "-"
            for s in ("sqlite", "postgresql")
        ]
        print(f"| {key} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
