"""Replies to control clients carry task specs and errors: every string in them is masked."""

from __future__ import annotations

from fleetd.runtime.redaction import REDACTED, Redactor, mask_message
from shared import messages as m
from shared.models import EventRecord, ExecutionResult

SECRET = "sk-unit-Known/Secret-0123456789"


def test_a_reply_is_masked_in_every_string_and_bytes_field() -> None:
    event = EventRecord(1, 1, 0, "text", 0, ("raw " + SECRET).encode())
    reply = m.EventPage(events=[event], more=False)
    masked = mask_message(reply, Redactor([SECRET]))
    assert masked.events[0].payload == b"raw " + REDACTED
    error = m.ErrorReply(code="bad_request", message=f"no such file /x/{SECRET}")
    assert mask_message(error, Redactor([SECRET])).message == "no such file /x/[REDACTED]"


def test_a_result_is_masked_and_a_clean_one_returned_as_is() -> None:
    result = ExecutionResult(error=f"cannot start agent '/x/{SECRET}'", final_message="fine")
    masked = mask_message(result, Redactor([SECRET]))
    assert masked.error == "cannot start agent '/x/[REDACTED]'"
    assert masked.final_message == "fine"
    clean = ExecutionResult(error="nothing here")
    assert mask_message(clean, Redactor([SECRET])) is clean
