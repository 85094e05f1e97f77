"""Fixtures of the broker's tests: a queue on a temp file, and a broker around it.

A test module that needs another store (an exact backoff, say) defines its own `store`; the
`broker` fixture then wraps that one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.broker.logic import Broker
from fleetd.broker.policy import Backoff
from fleetd.broker.store import QueueStore
from shared.config import load_config


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QueueStore]:
    opened = QueueStore.open(tmp_path / "q.db", 3)
    yield opened
    opened.close()


@pytest.fixture
def exact_backoff_store(tmp_path: Path) -> Iterator[QueueStore]:
    """A queue whose retry waits are exact: the jitter (rng 1.0) adds the whole random half."""
    opened = QueueStore.open(tmp_path / "q.db", 3, Backoff(5.0, 300.0, rng=lambda: 1.0))
    yield opened
    opened.close()


@pytest.fixture
def broker(store: QueueStore, tmp_path: Path) -> Broker:
    return Broker(store, load_config({"HOME": str(tmp_path)}))
