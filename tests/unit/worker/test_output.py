"""Agent output: bytes into lines, lines into typed and flagged events, secrets masked."""

from __future__ import annotations

import msgspec
import pytest

from fleetd.agents.codex_events import AgentLine
from fleetd.runtime.redaction import REDACTED, Redactor
from fleetd.worker.output import PARSE_LIMIT, LineSplitter, classify
from shared.models import FLAG_HUGE, FLAG_NO_NEWLINE, FLAG_NOT_JSON, FLAG_NOT_UTF8, FLAG_PARTIAL

# --- LineSplitter ---------------------------------------------------------------------------


def test_whole_lines_in_one_chunk() -> None:
    assert LineSplitter(100).feed(b"one\ntwo\n") == [(b"one", 0), (b"two", 0)]


def test_line_across_chunk_boundaries() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"c\nde") == [(b"abc", 0)]
    assert splitter.feed(b"f") == []
    assert splitter.feed(b"\n") == [(b"def", 0)]
    assert splitter.finish() == []


def test_empty_lines_are_kept() -> None:
    assert LineSplitter(100).feed(b"a\n\n\nb\n") == [(b"a", 0), (b"", 0), (b"", 0), (b"b", 0)]


def test_last_line_without_newline_is_flagged_at_finish() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"x\ntail") == [(b"x", 0)]
    assert splitter.finish() == [(b"tail", FLAG_NO_NEWLINE)]
    assert splitter.finish() == []


def test_finish_after_a_newline_gives_nothing() -> None:
    splitter = LineSplitter(100)
    splitter.feed(b"x\n")
    assert splitter.finish() == []


def test_long_line_fed_in_pieces_is_cut_into_partial_pieces() -> None:
    splitter = LineSplitter(4)
    out = splitter.feed(b"abcdefghij")
    out += splitter.feed(b"\nnext\n")
    assert out == [
        (b"abcd", FLAG_PARTIAL),
        (b"efgh", FLAG_PARTIAL),
        (b"ij", FLAG_PARTIAL),
        (b"next", 0),
    ]


def test_partial_pieces_join_back_into_the_line() -> None:
    line = bytes(range(256)).replace(b"\n", b"") * 10
    splitter = LineSplitter(100)
    out = []
    for start in range(0, len(line), 37):
        out += splitter.feed(line[start : start + 37])
    out += splitter.feed(b"\n")
    assert all(flags == FLAG_PARTIAL and len(piece) <= 100 for piece, flags in out)
    assert b"".join(piece for piece, _ in out) == line


def test_line_of_exactly_max_length_is_not_cut() -> None:
    splitter = LineSplitter(4)
    assert splitter.feed(b"abcd") == []
    assert splitter.feed(b"\n") == [(b"abcd", 0)]


def test_long_unterminated_line_ends_partial_and_no_newline() -> None:
    splitter = LineSplitter(4)
    assert splitter.feed(b"abcdef") == [(b"abcd", FLAG_PARTIAL)]
    assert splitter.finish() == [(b"ef", FLAG_NO_NEWLINE | FLAG_PARTIAL)]


def test_line_after_a_cut_line_is_not_partial() -> None:
    splitter = LineSplitter(4)
    splitter.feed(b"abcdef")
    assert splitter.feed(b"g\nh\n") == [(b"efg", FLAG_PARTIAL), (b"h", 0)]


def test_long_line_in_one_chunk_with_its_newline_is_cut() -> None:
    out = LineSplitter(4).feed(b"abcdefghij\n")
    assert all(len(piece) <= 4 for piece, _ in out)
    assert b"".join(piece for piece, _ in out) == b"abcdefghij"
    assert {flags for _, flags in out} == {FLAG_PARTIAL}


# --- classify -------------------------------------------------------------------------------


def test_json_object_with_type_is_that_type() -> None:
    kind, flags, parsed = classify(b'{"type":"turn.started"}')
    assert (kind, flags) == ("turn.started", 0)
    assert parsed == AgentLine(type="turn.started")


def test_json_object_with_extra_fields_is_parsed() -> None:
    line = b'{"type":"thread.started","thread_id":"t-1","other":[1,{"a":2}]}'
    kind, flags, parsed = classify(line)
    assert (kind, flags) == ("thread.started", 0)
    assert parsed is not None and parsed.thread_id == "t-1"


def test_json_object_without_type_is_json() -> None:
    kind, flags, parsed = classify(b'{"hello":"world"}')
    assert (kind, flags) == ("json", 0)
    assert parsed == AgentLine()


def test_json_object_with_empty_type_is_json() -> None:
    assert classify(b'{"type":""}')[:2] == ("json", 0)


def test_json_object_of_unexpected_shape_keeps_its_type() -> None:
    # `item` should be an object; the line is still typed, just not parsed.
    assert classify(b'{"type":"item.completed","item":"oops"}') == ("item.completed", 0, None)


def test_json_object_with_non_string_type_is_json() -> None:
    assert classify(b'{"type":5}') == ("json", 0, None)


@pytest.mark.parametrize("line", [b"[1,2,3]", b'"text"', b"42", b"null", b"[]"])
def test_json_that_is_not_an_object_is_json(line: bytes) -> None:
    assert classify(line) == ("json", 0, None)


@pytest.mark.parametrize("line", [b"hello world", b"", b"{not json", b'{"type":"x"} trailing'])
def test_plain_text_is_text_and_flagged(line: bytes) -> None:
    assert classify(line) == ("text", FLAG_NOT_JSON, None)


def test_invalid_utf8_is_binary_and_flagged() -> None:
    assert classify(b"\xff\xfeabc") == ("binary", FLAG_NOT_JSON | FLAG_NOT_UTF8, None)


def test_valid_utf8_text_is_not_flagged_binary() -> None:
    assert classify("héllo ✓".encode()) == ("text", FLAG_NOT_JSON, None)


def test_line_over_parse_limit_is_huge() -> None:
    line = b'{"type":"x","pad":"' + b"a" * PARSE_LIMIT + b'"}'
    assert classify(line) == ("huge", FLAG_HUGE, None)


def test_huge_invalid_utf8_is_flagged_both() -> None:
    assert classify(b"\xff" * (PARSE_LIMIT + 1)) == ("huge", FLAG_HUGE | FLAG_NOT_UTF8, None)


def test_line_at_parse_limit_is_still_parsed() -> None:
    line = b'{"type":"big","pad":"' + b"a" * (PARSE_LIMIT - 30) + b'"}'
    line += b" " * (PARSE_LIMIT - len(line))
    assert len(line) == PARSE_LIMIT
    assert classify(line)[:2] == ("big", 0)


@pytest.mark.parametrize("line", [b'"\xff"', b'["\xff"]', b'{"type":"a\xff"}'])
def test_json_with_invalid_utf8_string_is_binary(line: bytes) -> None:
    assert classify(line) == ("binary", FLAG_NOT_JSON | FLAG_NOT_UTF8, None)


def test_json_object_with_invalid_utf8_in_unknown_field_is_flagged() -> None:
    assert classify(b'{"a":"\xff"}')[1] & FLAG_NOT_UTF8


@pytest.mark.parametrize(
    "line",
    [b"[" * 2000 + b"]" * 2000, b'{"a":' * 2000 + b"1" + b"}" * 2000],
    ids=["array", "object"],
)
def test_deeply_nested_json_is_json(line: bytes) -> None:
    assert classify(line)[:2] == ("json", 0)


# --- Redactor -------------------------------------------------------------------------------


def test_clean_line_is_returned_as_is() -> None:
    line = b'{"type":"item.completed","text":"nothing secret here"}'
    masked, changed = Redactor(["hunter2-secret"]).mask(line)
    assert masked is line
    assert changed is False


def test_known_secret_is_masked_everywhere() -> None:
    masked, changed = Redactor(["hunter2-secret"]).mask(b"a hunter2-secret b hunter2-secret")
    assert masked == b"a " + REDACTED + b" b " + REDACTED
    assert changed is True


def test_longer_secret_is_masked_whole() -> None:
    masked, _ = Redactor(["abcd", "abcdefgh"]).mask(b"x abcdefgh y abcd")
    assert masked == b"x " + REDACTED + b" y " + REDACTED


def test_very_short_secrets_are_not_masked() -> None:
    masked, changed = Redactor(["abc", ""]).mask(b"abc abc")
    assert (masked, changed) == (b"abc abc", False)


@pytest.mark.parametrize(
    "key",
    [
        "sk-" + "A1b2C3d4E5f6G7h8I9j0K1",
        "sk-proj-" + "x" * 40,
        "ghp_" + "a" * 36,
        "github_pat_" + "B" * 40,
        "xoxb-" + "1234567890",
        "AKIA" + "ABCDEFGHIJKLMNOP",
    ],
)
def test_key_shaped_strings_are_masked(key: str) -> None:
    masked, changed = Redactor([]).mask(f'{{"text":"use {key} now"}}'.encode())
    assert masked == b'{"text":"use ' + REDACTED + b' now"}'
    assert changed is True


@pytest.mark.parametrize("text", ["sk-short", "ghp_tooShort123", "AKIA1234"])
def test_short_key_like_strings_are_left_alone(text: str) -> None:
    line = text.encode()
    assert Redactor([]).mask(line) == (line, False)


def test_word_ending_in_sk_is_not_a_key() -> None:
    line = b"wrote /tmp/disk-usage-report-2024-01-01.txt"
    assert Redactor([]).mask(line) == (line, False)


# --- every undoable spelling of a secret -----------------------------------------------------

KNOWN = "sk-fleet-Known/Secret-0123456789abcdef"


def _escape_char(text: str, index: int) -> str:
    return text[:index] + f"\\u{ord(text[index]):04X}" + text[index + 1 :]


@pytest.mark.parametrize("index", [0, 5, 8, len(KNOWN) - 1])
def test_secret_with_a_char_written_as_u_escape_is_masked(index: int) -> None:
    line = (
        '{"type":"item.completed","item":{"type":"agent_message","text":"key '
        + _escape_char(KNOWN, index)
        + '"}}'
    ).encode()
    masked, changed = Redactor([KNOWN]).mask(line)
    assert changed
    assert KNOWN not in msgspec.json.decode(masked)["item"]["text"]
    assert REDACTED in masked


def test_secret_with_escaped_slash_and_every_char_escaped_is_masked() -> None:
    slashed = KNOWN.replace("/", "\\/")
    all_escaped = "".join(f"\\u{ord(c):04x}" for c in KNOWN)
    for spelling in (slashed, all_escaped):
        masked, changed = Redactor([KNOWN]).mask(f'["{spelling}"]'.encode())
        assert changed and KNOWN not in msgspec.json.decode(masked)[0]


def test_escaped_secret_is_masked_in_text_that_is_not_json() -> None:
    masked, changed = Redactor([KNOWN]).mask(("not json " + _escape_char(KNOWN, 3)).encode())
    assert (masked, changed) == (b"not json " + REDACTED, True)


def test_key_shape_written_with_an_escape_is_masked_once_decoded() -> None:
    key = "gh\\u0070_" + "A" * 30
    masked, changed = Redactor([]).mask(f'{{"text":"{key}"}}'.encode())
    assert changed and msgspec.json.decode(masked) == {"text": REDACTED.decode()}


@pytest.mark.parametrize(
    "key",
    [
        "ghp_" + "a" * 27,
        "gho_" + "b" * 27,
        "ghs_" + "c" * 27,
        "ghu_" + "d" * 27,
        "github_pat_" + "E" * 22,
        "sk-ant-api03-" + "F" * 20,
    ],
)
def test_short_github_and_anthropic_tokens_are_masked(key: str) -> None:
    assert Redactor([]).mask(key.encode()) == (REDACTED, True)


def test_secret_across_the_line_cut_is_masked_whole() -> None:
    redactor = Redactor([KNOWN])
    splitter = LineSplitter(1024, redactor.cut_before, redactor.window)
    line = b"x" * 1000 + KNOWN.encode() + b"y" * 3000 + b"\n"
    pieces = [piece for chunk in (line[:1010], line[1010:]) for piece in splitter.feed(chunk)]
    assert b"".join(p for p, _ in pieces) == line[:-1]
    assert all(len(p) <= 1024 and flags & FLAG_PARTIAL for p, flags in pieces)
    masked = [redactor.mask(p)[0] for p, _ in pieces]
    assert not any(KNOWN[:4].encode() in m and KNOWN.encode() not in m for m in masked)
    assert all(KNOWN.encode() not in m for m in masked) and REDACTED in b"".join(masked)


def test_escaped_secret_across_the_cut_at_stream_end_is_masked_whole() -> None:
    redactor = Redactor([KNOWN])
    splitter = LineSplitter(1024, redactor.cut_before, redactor.window)
    escaped = _escape_char(KNOWN, 10).encode()
    pieces = splitter.feed(b"x" * 1020 + escaped) + splitter.finish()
    assert pieces[-1][1] & FLAG_NO_NEWLINE
    assert all(redactor.mask(p)[0].endswith(REDACTED) or b"\\u" not in p for p, _ in pieces)
    assert REDACTED in b"".join(redactor.mask(p)[0] for p, _ in pieces)


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user:"])
def test_secret_in_base64_is_masked_at_every_alignment(prefix: bytes) -> None:
    import base64

    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        line = b"Authorization: Basic " + encode(prefix + KNOWN.encode() + b"!")
        masked, changed = Redactor([KNOWN]).mask(line)
        assert changed and REDACTED in masked
        # What is left of the encoding is a few characters either side: not the secret.
        left = masked.replace(b"Authorization: Basic ", b"").split(REDACTED)
        assert all(len(part) <= 8 for part in left)


def test_base64_secret_across_the_cut_is_masked_whole() -> None:
    import base64

    redactor = Redactor([KNOWN])
    encoded = base64.b64encode(KNOWN.encode())
    splitter = LineSplitter(1024, redactor.cut_before, redactor.window)
    pieces = splitter.feed(b"x" * 1010 + encoded + b"y" * 3000 + b"\n")
    assert sum(REDACTED in redactor.mask(p)[0] for p, _ in pieces) == 1


def _percent_forms(secret: bytes) -> list[bytes]:
    from urllib.parse import quote_from_bytes

    every_byte = "".join(f"%{b:02X}" for b in secret)
    return [quote_from_bytes(secret, safe=""), every_byte, every_byte.lower()]


@pytest.mark.parametrize(
    "encode",
    [
        lambda s: s.hex().encode(),
        lambda s: s.hex().upper().encode(),
        lambda s: _percent_forms(s)[0].encode(),
        lambda s: _percent_forms(s)[1].encode(),
        lambda s: _percent_forms(s)[2].encode(),
    ],
    ids=["hex", "HEX", "percent", "percent-every-byte", "percent-every-byte-lower"],
)
def test_secret_in_hex_or_percent_encoding_is_masked(encode) -> None:
    secret = KNOWN + "/+ =&"  # characters that percent-encoding changes
    line = b'{"url": "https://example.invalid/?t=' + encode(secret.encode()) + b'&x=1"}'
    masked, changed = Redactor([secret]).mask(line)
    assert changed and encode(secret.encode()) not in masked and REDACTED in masked
