"""Fixtures of the broker's tests: a queue, and a broker around it, on each store.

`store` (and `exact_backoff_store`) is the SQLite store on a temp file and the PostgreSQL
store on a fresh database of the session's cluster: every test that takes one runs against
both (one suite for both stores, as DESIGN.md asks). A test of what only SQLite has (its
query plans, its file) is marked `sqlite_only`. A test module that needs another store
defines its own `store`; the `broker` fixture then wraps that one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.broker.logic import Broker
from fleetd.broker.policy import Backoff
from fleetd.broker.store import QueueStore
from fleetd.stores.protocol import QueueStoreAPI
from shared.config import load_config

STORE_KINDS = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: a store test of what only SQLite has")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" not in metafunc.fixturenames:
        return
    sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
    kinds = [
        pytest.param(kind, marks=[pytest.mark.postgres] if kind == "postgres" else [])
        for kind in STORE_KINDS
        if kind == "sqlite" or not sqlite_only
    ]
    metafunc.parametrize("store_kind", kinds)


def open_store(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    max_attempts: int = 3,
    backoff: Backoff | None = None,
) -> QueueStoreAPI:
    if kind == "sqlite":
        return QueueStore.open(tmp_path / "q.db", max_attempts, backoff)
    from fleetd.stores.postgres import PgQueueStore

    cluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database(request.getfixturevalue("pg_migrated_template"))
    request.addfinalizer(lambda: cluster.drop_database(name))
    url = cluster.url(name)
    return PgQueueStore.open(url, max_attempts, backoff, node="node-a", wait=False)


@pytest.fixture(scope="session")
def pg_migrated_template(pg_cluster) -> str:
    """A database with the queue's schema, that each test's database is copied from (a copy
    costs what an empty one does; migrating costs as much again)."""
    from fleetd.stores.postgres import PgQueueStore

    name = pg_cluster.create_database()
    PgQueueStore.open(pg_cluster.url(name), 3, wait=False, listen=False).close()
    return name


@pytest.fixture
def store(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    opened = open_store(store_kind, request, tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def exact_backoff_store(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator:
    """A queue whose retry waits are exact: the jitter (rng 1.0) adds the whole random half."""
    backoff = Backoff(5.0, 300.0, rng=lambda: 1.0)
    opened = open_store(store_kind, request, tmp_path, backoff=backoff)
    yield opened
    opened.close()


@pytest.fixture
def broker(store: QueueStoreAPI, tmp_path: Path) -> Broker:
    return Broker(store, load_config({"HOME": str(tmp_path)}))
