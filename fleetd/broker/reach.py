"""Whether this node's broker reaches its database, and when it must stop its own agents.

Leases are renewed in the database. A node that cannot reach it for longer than a lease must
assume every lease it held has expired and been taken over by another node: its agents would
run the same tasks twice and their results would be refused by the fence anyway, so the
broker tells each busy worker `LeaseLost` once, and they end their agents' groups.
"""

from __future__ import annotations

import enum

from loguru import logger


class Reach(enum.Enum):
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"  # since the last success; the leases may still hold
    LOST = "lost"  # longer than a lease: this node's agents were told to stop


class DatabaseWatch:
    """The database's reach as the broker saw it, from each store call's success or failure."""

    def __init__(self, lease_us: int) -> None:
        self.lease_us = lease_us
        self.phase = Reach.REACHABLE
        self.reached_at: int | None = None  # the last successful call

    def reached(self, now: int) -> None:
        if self.phase is not Reach.REACHABLE:
            logger.info("the queue's database answers again")
        self.phase = Reach.REACHABLE
        self.reached_at = now

    def failed(self, now: int, why: str) -> bool:
        """A store call failed for want of the database; True once it has been out of reach
        for longer than a lease (the caller stops this node's agents then)."""
        if self.reached_at is None:
            self.reached_at = now  # unreachable from the start: count from here
        if self.phase is Reach.REACHABLE:
            logger.warning("the queue's database cannot be reached: {}", why)
            self.phase = Reach.UNREACHABLE
        if self.phase is Reach.UNREACHABLE and now - self.reached_at > self.lease_us:
            logger.error(
                "the queue's database has been out of reach for longer than a lease "
                "({:g} s): this node's agents stop (their tasks run elsewhere)",
                self.lease_us / 1_000_000,
            )
            self.phase = Reach.LOST
            return True
        return False
