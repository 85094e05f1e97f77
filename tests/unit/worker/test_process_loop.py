"""Pieces of the worker's poll loop (`fleetd.worker.process`) that need no sockets."""

from __future__ import annotations

from fleetd.worker.process import MAX_POLL_MS, _poll_ms


def test_a_timer_under_a_millisecond_away_is_waited_for_not_spun_on() -> None:
    assert _poll_ms(0.0004) == 1  # pyzmq would truncate 0.9 ms to poll(0), again and again
    assert _poll_ms(0.0015) == 2
    assert _poll_ms(0.0) == 0 and _poll_ms(-0.5) == 0  # due already: look now
    assert _poll_ms(30.0) == MAX_POLL_MS
