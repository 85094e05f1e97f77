"""Replies to control clients carry task specs and errors: every string in them is masked."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.runtime.redaction import (
    KEY_SHAPES,
    KEY_STARTS_TEXT,
    REDACTED,
    Redactor,
    _mask_values,
    mask_message,
)
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


# A reply with no bytes field skips the field walk when its JSON holds no secret: the two
# must agree on every reply, however its strings are spelled.
FRAGMENTS = [
    SECRET,
    "sk-ant-api03-" + "A" * 24,
    "ghp_" + "b" * 30,
    "\n",
    '"',
    "\\",
    "/",
    "é",
    "\u2028",
    "\x1b[31m",
    "x",
    "AKIA",
    "0123456789ABCDEF",
]


def _walked(message: object, redactor: Redactor) -> object:
    plain = msgspec.to_builtins(message, builtin_types=(bytes,))
    return msgspec.convert(_mask_values(plain, redactor), type(message), builtin_types=(bytes,))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("".join), max_size=4))
def test_skipping_the_walk_masks_exactly_what_the_walk_masks(texts: list[str]) -> None:
    redactor = Redactor([SECRET])
    texts = [*texts, "", "", "", ""]
    reply = m.ErrorReply(code="bad_request", message=texts[0])
    result = ExecutionResult(error=texts[1], final_message=texts[2], thread_id=texts[3] or None)
    for message in (reply, result):
        assert mask_message(message, redactor) == _walked(message, redactor)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(KEY_SHAPES.removeprefix("(?<![A-Za-z0-9])"), fullmatch=True))
def test_every_key_shape_starts_with_a_listed_start_and_is_masked(key: str) -> None:
    # The regex runs only where one of KEY_STARTS is: a new shape must add its start there.
    assert any(key.startswith(start) for start in KEY_STARTS_TEXT), key
    redactor = Redactor([])
    assert redactor.mask_text(f"key: {key}") == "key: [REDACTED]"
    assert redactor.mask(f"key: {key}".encode())[0] == b"key: " + REDACTED


PLAIN_SECRET = "hunter2-Known/Secret"  # no key shape's start in it
LINE_FRAGMENTS = [
    PLAIN_SECRET,
    '{"t":"hunter2-Known\\/Secret"}',  # the secret as JSON may escape it
    '{"t":"\\u0073k-ant-api03-' + "A" * 24 + '"}',  # a key written with an escape
    "sk-ant-api03-" + "A" * 24,
    "x",
    "\\",
    "/",
    "é",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(LINE_FRAGMENTS), max_size=4).map("".join), max_size=5))
def test_lines_said_to_hold_nothing_are_left_as_they_are(texts: list[str]) -> None:
    # The worker masks no line of a read whose lines together hold nothing.
    redactor = Redactor([PLAIN_SECRET])
    lines = [text.encode() for text in texts]
    if redactor.holds_nothing(b"".join(lines)):
        assert all(redactor.mask(line) == (line, False) for line in lines)
