"""Nodes: each fleetd's heartbeat in a shared queue, so any node shows every node's workers.

A node's broker writes one row (its name, when, its workers as it sees them) at each lease
check; every node reads the others' rows for `fleetctl workers` and `status`. On SQLite there
is one node and no table: its broker knows its own workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from shared.models import WorkerView

# The table: migration v2 of fleetd/stores/postgres/schema.py.
BEAT = """
INSERT INTO nodes (name, seen_at, worker_count, workers) VALUES (%s, %s, %s, %s)
ON CONFLICT (name) DO UPDATE
SET seen_at = excluded.seen_at, worker_count = excluded.worker_count, workers = excluded.workers
"""
# A node not heard of for this long is gone for good (renamed, decommissioned): not shown.
FORGET_AFTER_US = 24 * 3600 * 1_000_000

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[WorkerView]).decode


@dataclass(frozen=True)
class NodeBeat:
    """One node's last heartbeat."""

    node: str
    seen_at: int
    workers: list[WorkerView]


def beat_args(node: str, workers: list[WorkerView], now: int) -> tuple:
    return (node, now, len(workers), _encode(workers))


def others_query(node: str, now: int) -> tuple[str, tuple]:
    sql = "SELECT name, seen_at, workers FROM nodes WHERE name <> %s AND seen_at > %s ORDER BY name"
    return sql, (node, now - FORGET_AFTER_US)


def beats_of(rows: list[tuple]) -> list[NodeBeat]:
    return [NodeBeat(name, seen_at, _decode(bytes(blob))) for name, seen_at, blob in rows]


def other_workers(beats: list[NodeBeat], now: int, lease_us: int) -> list[WorkerView]:
    """The other nodes' workers, each with its node, when it was heard of, and whether that
    is longer ago than a lease (its node is lost: its tasks go back to the queue)."""
    out = []
    for beat in beats:
        lost = now - beat.seen_at > lease_us
        for worker in beat.workers:
            out.append(
                msgspec.structs.replace(worker, node=beat.node, seen_at=beat.seen_at, lost=lost)
            )
    return out
