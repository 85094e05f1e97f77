"""The PostgreSQL queue store (`queue.url = "postgresql://..."`): several fleetd, one queue."""

from fleetd.stores.postgres.store import PgQueueStore

__all__ = ["PgQueueStore"]
