"""The overview's figures, pure (tested without a fleet): tasks finished per minute and
failures by class over the last hour, read from the newest tasks; a running task's latest
event in a few words."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import msgspec

from shared.models import EventRecord, TaskView, now_us

HOUR_US = 3600 * 1_000_000
_decode = msgspec.json.Decoder().decode


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


PREVIEW_CHARS = 160


def describe(event: EventRecord) -> str:
    """An event in a few words, for the overview: what the agent said or ran, or its type."""
    try:
        value = _decode(event.payload)
    except msgspec.DecodeError:
        return _short(event.payload.decode("utf-8", errors="replace"))
    item = value.get("item") if isinstance(value, dict) else None
    if isinstance(item, dict):
        kind = item.get("type")
        if kind in ("agent_message", "reasoning") and isinstance(item.get("text"), str):
            return _short(item["text"])
        if kind == "command_execution":
            exit_code = item.get("exit_code")
            status = "running" if exit_code is None else f"exit {exit_code}"
            return _short(f"$ {item.get('command', '')} ({status})")
        if kind == "file_change":
            paths = [c.get("path", "") for c in item.get("changes", []) if isinstance(c, dict)]
            return _short("files: " + ", ".join(paths))
    return _short(event.type)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"
