"""The PostgreSQL store's connections: one for its transactions, one that LISTENs, and the
waiting out of an outage (a restart, a failover, a cut network) with capped back-off.

The broker is one thread doing one transaction at a time, so it holds one connection rather
than a pool: psycopg_pool's reconnection doubles its wait without a cap and logs every try,
where an outage here must cost one log line and be noticed within a few seconds of its end.

Every transaction is a function of its connection (`run`), so that a lost connection or a
deadlock runs it again from the start on a fresh one. A commit whose reply was lost is not
run again blindly: the transaction's id, read before the commit, is looked up once the
database answers again (`pg_xact_status`), and a transaction that did commit returns what it
computed, so an enqueue is stored once and a claim made once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from loguru import logger
from psycopg import errors

# PostgreSQL cannot be reached (and we were told to stop waiting, or not to wait): the one
# exception every store raises for it, which the broker and the recorder wait out.
from fleetd.stores.errors import StoreUnavailable
from shared.config import url_without_password
from shared.errors import FleetError

T = TypeVar("T")

FIRST_DELAY = 0.1
MAX_DELAY = 5.0  # an outage's end is noticed within this long
MAX_ROLLBACK_RETRIES = 20  # deadlocks and serialization failures: run again at once
CHANNEL = "fleet_queue"
# libpq settings: a dead server or a cut link surfaces as an error within seconds, not at
# the kernel's TCP timeout (minutes), so the broker waits it out and its leases stay honest.
CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


def connect(url: str, name: str, autocommit: bool = False) -> psycopg.Connection:
    """A connection to `url`; its failure says where, never with the password."""
    try:
        return psycopg.connect(url, autocommit=autocommit, application_name=name, **CONNECT_OPTIONS)
    except psycopg.OperationalError as exc:  # down, unreachable, refused: worth waiting for
        raise StoreUnavailable(describe(url, exc)) from None
    except psycopg.Error as exc:  # a URL libpq cannot read: waiting would not help
        raise BadQueueUrl(describe(url, exc) + "; fix queue.url (FLEET_QUEUE_URL)") from None


class BadQueueUrl(FleetError):
    """queue.url is not a connection string libpq can read."""


def describe(url: str, exc: BaseException) -> str:
    """What went wrong reaching `url`, in one line without its password."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    try:
        password = psycopg.conninfo.conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    if password:
        detail = detail.replace(str(password), "***")
    return f"cannot use the PostgreSQL queue at {url_without_password(url)}: {detail}"


_TRANSLATED: dict[str, str] = {}  # each query's `%s` spelling, made once


class Tx:
    """A transaction's connection, with the `?` placeholders the SQLite store's SQL uses (so
    the helpers that build its queries serve both stores)."""

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Any = ()) -> psycopg.Cursor:
        query = _TRANSLATED.get(sql)
        if query is None:
            query = _TRANSLATED.setdefault(sql, sql.replace("?", "%s"))
        return self.conn.execute(query, args)  # type: ignore[arg-type]

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)  # type: ignore[arg-type]

    def returning_many(self, sql: str, rows: list[tuple]) -> list[tuple | None]:
        """Each row's RETURNING (None where it returned nothing), in order: psycopg pipelines
        the statements, one round trip for all rather than one each."""
        out: list[tuple | None] = []
        with self.conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows, returning=True)  # type: ignore[arg-type]
            while True:
                out.append(cursor.fetchone())
                if not cursor.nextset():
                    return out


class Database:
    """One PostgreSQL connection, reconnected with capped back-off when it fails."""

    def __init__(
        self, url: str, name: str, stop: Callable[[], bool] | None = None, wait: bool = True
    ) -> None:
        self.url = url
        self.name = name
        self.stop = stop or (lambda: False)
        self.wait = wait  # False (`fleetd migrate`): an outage is an error at once
        self.conn: psycopg.Connection | None = None
        self.down_since: float | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self, work: Callable[[Tx], T]) -> T:
        """`work` in one transaction, run again (from the start) after a deadlock or on a new
        connection after an outage, until it commits."""
        delay = FIRST_DELAY
        rollbacks = 0
        # (transaction id, result) of a commit whose outcome is unknown: its reply was lost.
        unsure: tuple[str, T] | None = None
        while True:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = connect(self.url, self.name)
                if unsure is not None:
                    committed = self._committed(self.conn, unsure[0])
                    if committed is None:  # still in progress: its backend has not noticed
                        raise StoreUnavailable("a lost commit is still in progress")
                    result, unsure = unsure[1], None
                    if not committed:
                        result, unsure = self._transaction(work)
                else:
                    result, unsure = self._transaction(work)
            except (errors.SerializationFailure, errors.DeadlockDetected):
                rollbacks += 1  # a deadlock or serialization failure: PostgreSQL chose us
                if rollbacks > MAX_ROLLBACK_RETRIES:
                    raise
                continue
            except (psycopg.OperationalError, StoreUnavailable) as exc:
                self._outage(exc)
                time.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
                continue
            if unsure is not None:  # the commit's reply was lost: find out before going on
                lost = ConnectionError("the connection ended during a commit")
                self._outage(StoreUnavailable(describe(self.url, lost)))
                continue
            if self.down_since is not None:
                logger.info(
                    "the PostgreSQL queue is reachable again (after {:.1f} s)",
                    time.monotonic() - self.down_since,
                )
                self.down_since = None
            return result

    def _transaction(self, work: Callable[[Tx], T]) -> tuple[T, tuple[str, T] | None]:
        """`work`, committed: (its result, None); or, when the commit's reply is lost, (its
        result, (the transaction's id, its result)) for `run` to look up."""
        conn = self.conn
        assert conn is not None
        try:
            result = work(Tx(conn))
            # NULL for a transaction that wrote nothing: running it again is harmless.
            xid = conn.execute("SELECT pg_current_xact_id_if_assigned()::text").fetchone()
        except BaseException:
            if not conn.broken and not conn.closed:
                conn.rollback()
            raise
        try:
            self._commit(conn)
        except psycopg.OperationalError:
            if xid is None or xid[0] is None:
                raise
            self.close()
            return result, (xid[0], result)
        return result, None

    @staticmethod
    def _commit(conn: psycopg.Connection) -> None:
        conn.commit()

    @staticmethod
    def _committed(conn: psycopg.Connection, xid: str) -> bool | None:
        """Whether transaction `xid` committed (None: it is still in progress)."""
        row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
        conn.rollback()  # the lookup's own (read-only) transaction
        status = row[0] if row else None
        return None if status == "in progress" else status == "committed"

    def _outage(self, exc: BaseException) -> None:
        """Drop a broken connection; log the outage's first failure only; give up if told."""
        if self.conn is not None and (self.conn.broken or self.conn.closed):
            self.close()
        message = str(exc) if isinstance(exc, StoreUnavailable) else describe(self.url, exc)
        if not self.wait:
            raise StoreUnavailable(message) from None
        if self.down_since is None:
            self.down_since = time.monotonic()
            logger.warning("{}; waiting for it (retrying up to every {:g} s)", message, MAX_DELAY)
        if self.stop():
            raise StoreUnavailable(message) from None


class Listener:
    """A LISTENing connection whose fd wakes the broker's poll loop on NOTIFY; reconnected
    quietly (the main connection logs outages) when it breaks."""

    def __init__(self, url: str, name: str, node: str) -> None:
        self.url = url
        self.name = name
        self.node = node
        self.conn: psycopg.Connection | None = None
        self.retry_at = 0.0
        self.delay = FIRST_DELAY

    def fd(self) -> int | None:
        return self.conn.fileno() if self.conn is not None else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def drain(self) -> bool:
        """Read the notifications waiting, without blocking: True if another node's (or a
        reconnect, after which some may have been missed)."""
        if self.conn is None:
            return self._reconnect()
        news = False
        try:
            pgconn = self.conn.pgconn
            pgconn.consume_input()
            while (note := pgconn.notifies()) is not None:
                news = news or note.extra.decode(errors="replace") != self.node
        except psycopg.Error:
            self.close()
            return self._reconnect()
        except Exception as exc:  # psycopg.pq raises its own errors for a dead socket
            logger.debug("the LISTEN connection failed: {}", type(exc).__name__)
            self.close()
            return self._reconnect()
        return news

    def _reconnect(self) -> bool:
        now = time.monotonic()
        if now < self.retry_at:
            return False
        try:
            self.conn = connect(self.url, self.name, autocommit=True)
            self.conn.execute(f"LISTEN {CHANNEL}")
        except (StoreUnavailable, psycopg.Error):
            self.close()
            self.retry_at = now + self.delay
            self.delay = min(self.delay * 2, MAX_DELAY)
            return False
        self.delay = FIRST_DELAY
        return True  # notifications may have been missed while it was down
