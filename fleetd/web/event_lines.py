"""A batch of events as one SSE message's JSON: the objects `fleetctl events --json` prints,
built for speed, since a followed task's every event goes through here.

A payload the worker found to be JSON goes out as it is stored (msgspec.Raw), not parsed and
encoded again; the time is formatted once per second, not per event; each event is a
struct, not a dict. (A masked line is parsed again: its mask was put in after the worker
looked; other odd lines go through `event_json`, which turns them into text.)
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.models import (
    FLAG_HUGE,
    FLAG_NOT_JSON,
    FLAG_NOT_UTF8,
    FLAG_PARTIAL,
    FLAG_REDACTED,
    EventRecord,
    flag_names,
    rfc3339,
)
from shared.views import event_json

_NOT_PLAIN_JSON = FLAG_NOT_JSON | FLAG_NOT_UTF8 | FLAG_HUGE | FLAG_PARTIAL | FLAG_REDACTED


class EventLine(msgspec.Struct):
    """`event_json`'s shape, field for field and in its order."""

    execution: int
    seq: int
    type: str
    ts: str
    flags: list[str]
    payload: Any


class Stamps:
    """`rfc3339`, formatting each second once: events come many to a second."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def __call__(self, us: int) -> str:
        second, micros = divmod(us, 1_000_000)
        if second != self.second:
            self.second = second
            self.prefix = str(rfc3339(second * 1_000_000))[:19]  # YYYY-MM-DDTHH:MM:SS
        return f"{self.prefix}.{micros:06d}Z"


_encode = msgspec.json.Encoder().encode


def _lines(batch: list[EventRecord]) -> list[Any]:
    stamp = Stamps()
    lines: list[Any] = []
    for event in batch:
        if event.flags & _NOT_PLAIN_JSON:
            lines.append(event_json(event))
            continue
        flags = flag_names(event.flags) if event.flags else []
        payload = msgspec.Raw(event.payload)
        ts = stamp(event.ts)
        lines.append(EventLine(event.execution, event.seq, event.type, ts, flags, payload))
    return lines


def batch_json(batch: list[EventRecord]) -> bytes:
    """The batch as one JSON array (an SSE message's data)."""
    return _encode(_lines(batch))


def batch_lines(batch: list[EventRecord]) -> bytes:
    """The batch as JSON lines, one event a line (what `fleetctl events --json` prints)."""
    return b"".join(_encode(line) + b"\n" for line in _lines(batch))
