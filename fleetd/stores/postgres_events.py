"""The event log in PostgreSQL: every node's recorder writes its own executions' events here,
and every node reads them all (fleetctl logs, show, the web's streams).

The same two tables as events.db (`event_streams` is events.db's `streams`), the same
idempotence: a batch's rows go in with one multi-row INSERT (`unnest` of arrays: one round
trip however long the batch) `ON CONFLICT DO NOTHING`, so a batch read again from a spool
after a crash stores nothing twice. Each recorder writes only the executions its node ran, so
two recorders never race on one stream.

A database that cannot be reached (a restart, a failover, a cut link) is `StoreUnavailable`,
never an exception that would crash the recorder: the spools hold every event meanwhile, and
the connection is opened again with capped exponential back-off.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg
from loguru import logger

from fleetd.stores.errors import StoreUnavailable
from fleetd.stores.postgres import schema
from shared.config import url_without_password
from shared.models import EventRecord

# The tables: migration v2 of fleetd/stores/postgres/schema.py, applied by whichever of the
# broker and the recorder opens the database first (under the migration lock).

INSERT_EVENTS = """
INSERT INTO events (execution_id, seq, ts, type, flags, payload)
SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::int[],
                     %s::bytea[])
ON CONFLICT DO NOTHING
"""
UPSERT_STREAM = """
INSERT INTO event_streams (execution_id, task_id, last_seq) VALUES (%s, %s, %s)
ON CONFLICT (execution_id) DO UPDATE
SET last_seq = GREATEST(event_streams.last_seq, excluded.last_seq)
"""
SEAL_STREAM = """
INSERT INTO event_streams (execution_id, task_id, sealed_at) VALUES (%s, %s, %s)
ON CONFLICT (execution_id) DO UPDATE SET sealed_at = excluded.sealed_at
"""
SELECT_EVENTS = (
    "SELECT e.execution_id, e.seq, e.ts, e.type, e.flags, e.payload"
    " FROM events e JOIN event_streams s ON s.execution_id = e.execution_id"
)

# A dead link must fail a statement in seconds, not after TCP's minutes of retransmissions.
CONNECT_OPTIONS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 5000,
}
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0


def server_of(url: str) -> str:
    """The URL fit for messages: never its password."""
    return url_without_password(url)


class Reconnecting:
    """One connection, opened again after it broke, no sooner than its back-off allows."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = server_of(url)
        self.conn: psycopg.Connection | None = None
        self.retry_at = 0.0
        self.backoff = BACKOFF_FIRST
        self.down_since: float | None = None

    def get(self) -> psycopg.Connection:
        if self.conn is not None and not self.conn.closed and not self.conn.broken:
            return self.conn
        if time.monotonic() < self.retry_at:
            raise StoreUnavailable(f"PostgreSQL at {self.where} cannot be reached; retrying")
        try:
            self.conn = psycopg.connect(self.url, autocommit=True, **CONNECT_OPTIONS)
        except psycopg.Error as exc:
            self.failed(exc)
            raise StoreUnavailable(f"PostgreSQL at {self.where} cannot be reached") from None
        if self.down_since is not None:
            logger.info(
                "the event log's PostgreSQL at {} is back after {:.1f} s",
                self.where,
                time.monotonic() - self.down_since,
            )
        self.down_since, self.backoff = None, BACKOFF_FIRST
        return self.conn

    def failed(self, exc: BaseException) -> None:
        """The connection or a statement failed: close it and wait before the next try."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.down_since is None:  # one line per outage, not per try
            self.down_since = time.monotonic()
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.warning(
                "the event log's PostgreSQL at {} cannot be reached ({}); events wait in the "
                "spools",
                self.where,
                reason.replace(self.url, self.where),
            )
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    @contextmanager
    def cursor(self) -> Iterator[psycopg.Cursor]:
        conn = self.get()
        try:
            with conn.cursor() as cursor:
                yield cursor
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.failed(exc)
            raise StoreUnavailable(f"PostgreSQL at {self.where} cannot be reached") from None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class PostgresEventLog:
    """The `EventStore` in PostgreSQL (`fleetd.stores.events`)."""

    def __init__(self, url: str) -> None:
        self.db = Reconnecting(url)
        self.schema_ready = False

    @classmethod
    def open(cls, url: str) -> PostgresEventLog:
        log = cls(url)
        try:
            log._ensure_schema()
        except StoreUnavailable as exc:
            logger.warning("{}: the event log's tables are made once it answers", exc)
        return log

    def close(self) -> None:
        self.db.close()

    def _ensure_schema(self) -> None:
        if self.schema_ready:
            return
        conn = self.db.get()
        try:
            schema.migrate(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.db.failed(exc)
            raise StoreUnavailable(f"PostgreSQL at {self.db.where} cannot be reached") from None
        self.schema_ready = True

    def store(
        self,
        runs: Iterable[tuple[int, int, list[EventRecord]]],
        sealed: Iterable[tuple[int, int]],
        now: int,
    ) -> None:
        """Store runs of events (task, execution, events) and seals in one transaction."""
        self._ensure_schema()
        with self.db.cursor() as cur, cur.connection.transaction():
            for task, execution, events in runs:
                if events:
                    cur.execute(INSERT_EVENTS, _columns(events))
                cur.execute(UPSERT_STREAM, (execution, task, events[-1].seq if events else 0))
            for task, execution in sealed:
                cur.execute(SEAL_STREAM, (execution, task, now))

    def total_events(self) -> int:
        return int(self._one("SELECT coalesce(sum(last_seq), 0) FROM event_streams", ()) or 0)

    def last_seq(self, execution: int) -> int:
        sql = "SELECT last_seq FROM event_streams WHERE execution_id = %s"
        return int(self._one(sql, (execution,)) or 0)

    def latest(self, task: int, limit: int) -> list[EventRecord]:
        """A task's last `limit` events, in order."""
        sql = (
            SELECT_EVENTS + " WHERE s.task_id = %s"
            " ORDER BY e.execution_id DESC, e.seq DESC LIMIT %s"
        )
        return list(reversed(self._records(sql, (task, limit))))

    def page(
        self, task: int, after_execution: int, after_seq: int, limit: int
    ) -> list[EventRecord]:
        """A task's events after (execution, seq), in order, at most `limit`."""
        sql = (
            SELECT_EVENTS + " WHERE s.task_id = %s AND (e.execution_id, e.seq) > (%s, %s)"
            " ORDER BY e.execution_id, e.seq LIMIT %s"
        )
        return self._records(sql, (task, after_execution, after_seq, limit))

    def _one(self, sql: str, args: tuple) -> object:
        self._ensure_schema()
        with self.db.cursor() as cur:
            row = cur.execute(sql, args).fetchone()
        return row[0] if row else None

    def _records(self, sql: str, args: tuple) -> list[EventRecord]:
        self._ensure_schema()
        with self.db.cursor() as cur:
            rows = cur.execute(sql, args).fetchall()
        return [
            EventRecord(execution=r[0], seq=r[1], ts=r[2], type=r[3], flags=r[4], payload=r[5])
            for r in rows
        ]


def _columns(events: list[EventRecord]) -> tuple[list, ...]:
    # PostgreSQL's text cannot hold NUL; a type is a short label the worker derived from the
    # line (the payload, bytea, keeps the line exactly).
    return (
        [e.execution for e in events],
        [e.seq for e in events],
        [e.ts for e in events],
        [e.type.replace("\x00", "\ufffd") for e in events],
        [e.flags for e in events],
        [bytes(e.payload) for e in events],
    )
