"""The queue's stores behind one seam (`QueueStoreAPI`): APSW SQLite on one host (the
embedded default, `fleetd.broker.store`), PostgreSQL for several (`fleetd.stores.postgres`).

`open_queue_store` picks one from `queue.url`; the broker never asks which it has.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from fleetd.broker.policy import Backoff
from shared.config import FleetConfig

if TYPE_CHECKING:
    from fleetd.stores.protocol import QueueStoreAPI


def open_queue_store(
    config: FleetConfig, node: str | None = None, stop: Callable[[], bool] | None = None
) -> QueueStoreAPI:
    """The queue store `config.queue.url` names, opened (and migrated) for this node.

    `node` names this fleetd among those sharing a PostgreSQL queue (default: the host name);
    its executions carry it, and a starting broker recovers only its own node's. An outage
    of PostgreSQL is waited out until `stop()` says to give up (StoreUnavailable).
    """
    queue = config.queue
    backoff = Backoff(queue.retry_backoff_seconds, queue.retry_backoff_max)
    node = node or socket.gethostname()
    if not queue.postgres:
        from fleetd.broker.store import QueueStore

        return QueueStore.open(config.paths().queue_db, queue.max_attempts, backoff, node=node)
    from fleetd.stores.postgres import PgQueueStore  # psycopg is imported only for it

    return PgQueueStore.open(queue.url, queue.max_attempts, backoff, node=node, stop=stop)
