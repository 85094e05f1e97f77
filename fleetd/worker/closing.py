"""An attempt whose agent ended, from its StreamEnd to the broker's acknowledgement of its
Finished: the part of an attempt that no longer needs the worker's agent slot.

    SEALING (StreamEnd sent; wait, bounded, for the recorder's StreamSealed)
      --> REPORTING (Finished sent, resent until the broker's FinishAck, or the next Assign
          that acknowledges it) --> gone

While one attempt closes, the worker may already run the next (it told the broker so with
`WorkerFree`): the seal is a round trip through the recorder's commit, and waiting for it
kept a worker's slot empty for a part of every task. The Finished still goes only after the
seal, so "every event is stored before a run is reported finished" holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from loguru import logger

from fleetd.runtime.locks import FileLock
from fleetd.worker.execution import Execution
from shared import messages as m

SEAL_WAIT_SECONDS = 10.0
RESEND_SECONDS = 2.0
# How long a released stream's seal may wait to be read while the worker runs its next agent:
# the result it releases waits for that agent's end anyway (it goes with that end's message).
SEAL_LOOK_SECONDS = 0.01


@dataclass
class Closing:
    """One attempt being sealed, then reported; `released` when the worker took work meanwhile."""

    execution: Execution
    finished: m.Finished
    deadline: float
    ended_at: float = 0.0  # when its StreamEnd was made
    sealed: bool = False  # False: SEALING; True: REPORTING
    task_lock: FileLock | None = None  # a repository task's, held until the result is acked
    fenced: bool = False  # its lease was lost (LeaseLost): sealed as usual, never reported

    @property
    def id(self) -> int:
        return self.execution.assign.execution

    @property
    def released(self) -> bool:
        return self.finished.released

    def look_at(self, running: bool, idle_wait: float) -> float:
        """From when the worker wakes for this stream's seal: at once if the worker waits for
        it (its WorkerFree was withheld); else after `idle_wait` (the worker waits for its
        next Assign, which comes with the seal for a short task), or SEAL_LOOK_SECONDS while
        the next agent runs."""
        if self.sealed:
            return float("inf")
        if not self.released:
            return self.ended_at
        return self.ended_at + (SEAL_LOOK_SECONDS if running else idle_wait)

    def report(self, now: float) -> m.Finished:
        """Sealed (or given up on): close the spool and report; resent until acknowledged."""
        # Closing the spool frees its lock: if the recorder missed the end, its sweep takes it.
        self.execution.close_spool()
        self.sealed = True
        self.deadline = now + RESEND_SECONDS
        return self.finished

    def resend(self, now: float) -> m.Finished:
        self.deadline = now + RESEND_SECONDS
        return self.finished

    def done(self) -> None:
        """The broker acknowledged the result."""
        if self.task_lock is not None:
            self.task_lock.release()
            self.task_lock = None


def due_reports(closings: Iterable[Closing], now: float) -> list[Closing]:
    """Closings whose timer is due: a seal waited for long enough (still unsealed: to report
    now), or a result to resend (sealed)."""
    due = []
    for closing in list(closings):
        if now < closing.deadline:
            continue
        if not closing.sealed:
            logger.warning(
                "recorder did not seal execution {} in time; it will ingest the spool later",
                closing.id,
            )
        due.append(closing)
    return due


def held_executions(
    running: int | None, closings: Iterable[Closing]
) -> tuple[int | None, list[int]]:
    """A heartbeat's `execution` and `sealing`: what keeps the worker busy (its agent's
    execution, or else a result reported without `WorkerFree`: the broker's next Assign waits
    for it), and every other attempt closing (their leases renewed too)."""
    closing_ids = [(closing.id, closing.released) for closing in closings]
    busy = running
    if busy is None:
        busy = next((id_ for id_, released in closing_ids if not released), None)
    return busy, [id_ for id_, _ in closing_ids if id_ != busy]
