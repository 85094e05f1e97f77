"""An agent's output: bytes into lines, lines into flagged, redacted, classified events."""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from fleetd.agents.codex_events import AgentLine
from shared.models import (
    FLAG_HUGE,
    FLAG_NO_NEWLINE,
    FLAG_NOT_JSON,
    FLAG_NOT_UTF8,
    FLAG_PARTIAL,
)

# Lines longer than this are stored whole but not parsed (parsing 50 MB of JSON for a type
# field would stall the worker).
PARSE_LIMIT = 1 << 20
REDACTED = b"[REDACTED]"

# Well-known credential shapes, masked even when their variable was not allow-listed.
KEY_PATTERNS = re.compile(
    rb"(?<![A-Za-z0-9])(?:"
    rb"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"
    rb"|gh[pousr]_[A-Za-z0-9]{36,}"
    rb"|github_pat_[A-Za-z0-9_]{40,}"
    rb"|xox[abprs]-[A-Za-z0-9\-]{10,}"
    rb"|AKIA[0-9A-Z]{16}"
    rb")"
)


class LineSplitter:
    """Splits a byte stream on newlines; a line over `max_line` bytes is cut into pieces."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.buffer = bytearray()
        self.continuing = False  # the next piece belongs to a line already cut

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """Complete lines (without the newline) and their flags, for the bytes seen so far."""
        out: list[tuple[bytes, int]] = []
        if b"\n" in data:
            self.buffer += data
            *lines, rest = bytes(self.buffer).split(b"\n")
            self.buffer = bytearray(rest)
            for line in lines:
                if len(line) > self.max_line:
                    out.extend(self._cut(line))
                else:
                    out.append((line, FLAG_PARTIAL if self.continuing else 0))
                self.continuing = False
        else:
            self.buffer += data
        while len(self.buffer) > self.max_line:
            out.append((bytes(self.buffer[: self.max_line]), FLAG_PARTIAL))
            del self.buffer[: self.max_line]
            self.continuing = True
        return out

    def _cut(self, line: bytes) -> list[tuple[bytes, int]]:
        step = self.max_line
        return [(line[i : i + step], FLAG_PARTIAL) for i in range(0, len(line), step)]

    def finish(self) -> list[tuple[bytes, int]]:
        """What is left when the stream closes: a last line without its newline."""
        if not self.buffer:
            return []
        flags = FLAG_NO_NEWLINE | (FLAG_PARTIAL if self.continuing else 0)
        line, self.buffer = bytes(self.buffer), bytearray()
        return [(line, flags)]


class Redactor:
    """Masks secret values (from the allow-listed secret variables) and key-shaped strings."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        values = {s.encode() for s in secrets if len(s) >= 4}
        self.secrets = sorted(values, key=len, reverse=True)

    def mask(self, line: bytes) -> tuple[bytes, bool]:
        masked = line
        for secret in self.secrets:
            if secret in masked:
                masked = masked.replace(secret, REDACTED)
        masked = KEY_PATTERNS.sub(REDACTED, masked)
        return masked, masked is not line and masked != line


_decode_line = msgspec.json.Decoder(AgentLine).decode
_decode_any = msgspec.json.Decoder().decode


def classify(line: bytes) -> tuple[str, int, AgentLine | None]:
    """(event type, flags, parsed line or None) for one line of agent output."""
    if len(line) > PARSE_LIMIT:
        return "huge", FLAG_HUGE | _utf8_flags(line), None
    if _utf8_flags(line):
        # msgspec would raise UnicodeDecodeError inside strings; such a line is not JSON text.
        return _not_json(line)
    try:
        parsed = _decode_line(line)
        return parsed.type or "json", 0, parsed
    except msgspec.ValidationError:
        pass  # JSON, but not shaped like an event object: find out what it is
    except msgspec.DecodeError:
        return _not_json(line)
    except RecursionError:
        return "json", 0, None  # absurdly deep, but JSON as far as we looked
    try:
        value = _decode_any(line)
    except msgspec.DecodeError:
        return _not_json(line)
    except RecursionError:
        return "json", 0, None
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value["type"] or "json", 0, None
    return "json", 0, None


def _not_json(line: bytes) -> tuple[str, int, None]:
    flags = FLAG_NOT_JSON | _utf8_flags(line)
    return ("binary" if flags & FLAG_NOT_UTF8 else "text"), flags, None


def _utf8_flags(line: bytes) -> int:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return FLAG_NOT_UTF8
    return 0
