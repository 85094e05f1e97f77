"""The overview's hour in numbers: tasks finished per minute and failures by class, read
from the newest tasks (pure, so that it is tested without a fleet)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from shared.models import TaskView, now_us

HOUR_US = 3600 * 1_000_000


@dataclass(frozen=True)
class Rates:
    finished: int  # tasks that reached a final state within the hour
    per_minute: float
    failures: dict[str, int]  # failure class (or the final state) -> tasks


def recent_rates(tasks: list[TaskView], now: int | None = None) -> Rates:
    now = now_us() if now is None else now
    recent = [t for t in tasks if t.finished_at is not None and now - t.finished_at <= HOUR_US]
    failures: Counter[str] = Counter()
    for task in recent:
        if task.state in ("failed", "timed_out"):
            klass = task.result.failure_class if task.result is not None else None
            failures[klass or task.state] += 1
    return Rates(len(recent), round(len(recent) / 60, 2), dict(failures.most_common()))
