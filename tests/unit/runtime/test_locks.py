"""File locks: held by a descriptor, free once it is closed, waited for with a bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.runtime.locks import FileLock


def test_a_held_lock_cannot_be_taken_until_released(tmp_path: Path) -> None:
    first = FileLock(tmp_path / "l")
    assert first.acquire(wait=False)
    second = FileLock(tmp_path / "l")
    assert not second.acquire(wait=False)
    first.release()
    assert second.acquire(wait=False)
    second.release()
    second.release()  # twice is harmless


def test_try_existing_takes_a_free_lock_and_never_creates_the_file(tmp_path: Path) -> None:
    assert FileLock.try_existing(tmp_path / "missing") is None
    assert not (tmp_path / "missing").exists()
    with FileLock(tmp_path / "l"):
        assert FileLock.try_existing(tmp_path / "l") is None
    lock = FileLock.try_existing(tmp_path / "l")
    assert lock is not None
    lock.release()


def test_acquire_within_gives_up_at_its_bound(tmp_path: Path) -> None:
    with FileLock(tmp_path / "l"):
        waiter = FileLock(tmp_path / "l")
        assert not waiter.acquire_within(0.05, lambda: None)
        waiter.release()


def test_acquire_within_stops_when_no_longer_wanted(tmp_path: Path) -> None:
    class Cancelled(Exception):
        pass

    def cancelled() -> None:
        raise Cancelled

    with FileLock(tmp_path / "l"):
        waiter = FileLock(tmp_path / "l")
        with pytest.raises(Cancelled):
            waiter.acquire_within(60.0, cancelled)
        waiter.release()
