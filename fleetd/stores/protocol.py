"""The queue store's seam: exactly what the broker asks of a store, whichever it is.

`fleetd.broker.store.QueueStore` (APSW SQLite) and `fleetd.stores.postgres.PgQueueStore`
both are one; the broker, its scheduling and its counters use nothing else, and never ask
which they have.

Fencing: every claim carries a lease token (`Claim.lease`). `renew`, `mark_started` and
`finish` given a token refuse it when it is not the execution's (its lease was taken over:
the execution was lost and the task claimed again, perhaps on another node): `renew`
returns False and `finish` (None, None), so a late copy of a run changes nothing.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from fleetd.broker.budgets import Spend
from fleetd.broker.rows import Claim, Closed, Retried
from fleetd.broker.scheduling import Gate
from fleetd.stores.errors import StoreUnavailable
from fleetd.stores.nodes import NodeBeat
from shared.messages import UsageGroup
from shared.models import (
    ExecutionResult,
    FinishedOutcome,
    TaskSpec,
    TaskState,
    TaskView,
    UsageRow,
    WorkerView,
)

# The queue's database cannot be reached (and the store was told to stop waiting): one
# exception for every store, defined beside the stores' other errors.
__all__ = ["QueueStoreAPI", "StoreUnavailable"]


@runtime_checkable
class QueueStoreAPI(Protocol):
    """Tasks and their executions: the broker's queue."""

    node: str  # this fleetd's name among the nodes sharing the queue (stamped on executions)

    def close(self) -> None: ...

    # --- writes ------------------------------------------------------------------------------

    def enqueue(self, specs: list[TaskSpec], now: int) -> list[tuple[int, bool]]: ...

    def enqueue_and_claim(
        self, specs: list[TaskSpec], now: int, worker: str, lease_us: int, gate: Gate | None
    ) -> tuple[list[tuple[int, bool]], Claim | None]: ...

    def claim(
        self,
        worker: str,
        now: int,
        lease_us: int,
        gate: Gate | None = None,
        node: str | None = None,
    ) -> Claim | None: ...

    def renew(
        self, execution: int, worker: str, now: int, lease_us: int, lease: int | None = None
    ) -> bool: ...

    def mark_started(
        self, execution: int, started_at: int, pid: int, lease: int | None = None
    ) -> None: ...

    def store_started(self) -> None: ...

    def finish(
        self,
        execution: int,
        outcome: FinishedOutcome,
        result: ExecutionResult,
        now: int,
        claim_for: str | None = None,
        lease_us: int = 0,
        gate: Gate | None = None,
        lease: int | None = None,
    ) -> tuple[TaskState | None, Claim | None]: ...

    def lose_worker(self, worker: str, reason: str, now: int) -> list[Closed]: ...

    def lose_expired(self, now: int) -> list[Closed]: ...

    def lose_execution(self, execution: int, reason: str, now: int) -> list[Closed]: ...

    def lose_all_running(self, reason: str, now: int) -> list[Closed]: ...

    def cancel(self, task: int, now: int) -> tuple[TaskState, int | None, str | None] | None: ...

    def retry(self, task: int, resume: bool, now: int) -> Retried | None: ...

    def set_priority(self, task: int, priority: int) -> TaskState | None: ...

    # --- reads -------------------------------------------------------------------------------

    def next_claimable_at(self, now: int = -1) -> int | None: ...

    def counts(self) -> dict[str, int]: ...

    def running_of(self, worker: str) -> list[tuple[int, int, int]]: ...

    def has_dependents(self, execution: int) -> bool: ...

    def get_task(self, task: int) -> TaskView | None: ...

    def tasks_by_key(self, keys: list[str]) -> list[TaskView]: ...

    def list_tasks(
        self, state: TaskState | None, limit: int, before: int | None = None, **narrow: str | None
    ) -> list[TaskView]: ...

    def list_page(
        self, state: TaskState | None, limit: int, before: int | None = None, **narrow: str | None
    ) -> tuple[list[TaskView], int | None]: ...

    def running_spec(self, execution: int) -> TaskSpec | None: ...

    def running_specs(self) -> list[TaskSpec]: ...

    def spend_since(self, since: int) -> list[Spend]: ...

    def usage(self, since: int, by: UsageGroup) -> list[UsageRow]: ...

    def tally_rows(self, after: int, running: list[int]) -> list[tuple]: ...

    def oldest_queued(self) -> int | None: ...

    # --- nodes (fleetd.stores.nodes) ---------------------------------------------------------

    def beat_node(self, workers: list[WorkerView], now: int) -> None:
        """This node is alive with these workers (for the other nodes' views)."""
        ...

    def other_nodes(self, now: int) -> list[NodeBeat]:
        """The other nodes' last heartbeats (none on SQLite: one node)."""
        ...

    # --- wake-ups ----------------------------------------------------------------------------

    def wakeup_fd(self) -> int | None:
        """A file descriptor that turns readable when another broker may have made a task
        claimable (PostgreSQL's LISTEN/NOTIFY); None when no one else writes the queue."""
        ...

    def drain_wakeups(self) -> bool:
        """Read what woke the fd; True if it was news (a claim may now succeed)."""
        ...
