"""Queue policy without SQL: where a task goes when an execution closes, how long a retry
waits, and why a `retry` request is refused."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.models import ExecutionOutcome, TaskState


@dataclass(frozen=True)
class Backoff:
    """The wait before retrying a transient failure: exponential, capped, with equal jitter.

    The n-th attempt's failure waits half of min(max_s, base_s * 2**(n-1)) plus a random
    part of the other half, so retries of many tasks failing together spread out.
    """

    base_s: float = 5.0
    max_s: float = 300.0
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def delay_us(self, attempts: int) -> int:
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(max(attempts - 1, 0), 62))
        return int(ceiling * 1_000_000 * (0.5 + 0.5 * self.rng()))


def task_state_after(
    outcome: ExecutionOutcome,
    attempts: int,
    max_attempts: int,
    cancel_requested: bool,
    transient: bool,
) -> TaskState:
    """Where a task goes when one of its executions closes."""
    if outcome == "failed" and transient and not cancel_requested and attempts < max_attempts:
        return "queued"
    if outcome in ("succeeded", "failed", "cancelled", "timed_out"):
        return outcome
    if cancel_requested:
        return "cancelled"
    if outcome == "interrupted":
        return "queued"
    # lost: at-least-once delivery, within the attempt budget.
    return "queued" if attempts < max_attempts else "failed"


def retry_refusal(task: int, state: TaskState) -> str:
    """Why a task that has not ended cannot be retried, and what to do instead."""
    if state == "running":
        return (
            f"task {task} is running: wait for it to end, or stop it with"
            f" `fleetctl cancel {task}`, then retry it"
        )
    return f"task {task} is already {state}: it will run again; `fleetctl show {task}` says when"


def not_resumable(task: int, agent: str) -> str:
    return (
        f"only codex and claude tasks can resume a thread; task {task} is a {agent} task:"
        " retry it without --resume"
    )


def no_thread(task: int) -> str:
    return (
        f"nothing to resume: no previous attempt of task {task} started a Codex thread;"
        " retry it without --resume"
    )
