"""The SSE batches' JSON is `fleetctl events --json`'s, object for object, odd lines too."""

from __future__ import annotations

import json

from fleetd.web.event_lines import batch_json, batch_lines
from shared.models import FLAG_HUGE, FLAG_NOT_JSON, FLAG_NOT_UTF8, FLAG_REDACTED, EventRecord
from shared.views import event_json

SECOND = 1_000_000


def test_a_batch_is_the_objects_events_json_prints() -> None:
    start = 1_764_000_000 * SECOND + 999_998  # across a second's end
    batch = [
        EventRecord(3, 1, start, "item.completed", 0, b'{"type":"item.completed","n": 1}'),
        EventRecord(3, 2, start + 1, "x", 0, b"[1, 2.5, null]"),
        EventRecord(3, 3, start + 2, "x", 0, b'{"later":"second"}'),
        EventRecord(3, 4, start + 5 * SECOND, "text", FLAG_NOT_JSON, b"plain words"),
        EventRecord(3, 5, start, "text", FLAG_NOT_JSON | FLAG_NOT_UTF8, b"bad \xff byte"),
        EventRecord(3, 6, start, "huge", FLAG_HUGE, b'{"big": true}'),
        EventRecord(3, 7, start, "x", FLAG_REDACTED, b'{"key": "[REDACTED]"}'),
    ]
    assert json.loads(batch_json(batch)) == [event_json(e) for e in batch]
    lines = batch_lines(batch).decode().splitlines()
    assert [json.loads(line) for line in lines] == [event_json(e) for e in batch]
    stamps = [line["ts"] for line in json.loads(batch_json(batch))]
    assert stamps[:3] == [
        "2025-11-24T16:00:00.999998Z",
        "2025-11-24T16:00:00.999999Z",
        "2025-11-24T16:00:01.000000Z",
    ]
