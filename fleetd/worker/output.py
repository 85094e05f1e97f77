"""An agent's output: bytes into lines, lines into flagged, redacted, classified events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from fleetd.agents.codex_events import AgentLine
from fleetd.worker.agent_process import PIPE_CAPACITY
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
# A read this full or fuller is not followed by a rest: the agent is writing fast, and a
# resting worker would leave it blocked on a full pipe.
REST_BELOW_BYTES = PIPE_CAPACITY // 4


@dataclass
class OutputRest:
    """How long an agent's pipes rest between reads (`worker.output_batch_ms`).

    After the spawn, and after a read that found little, the worker polls only the agent's
    pidfd for `seconds`: an agent that prints a line and exits is read once, at its end,
    instead of at each write. In the throughput benchmark it cut a worker's loop turns per
    task from ~4 to ~2.9 and its CPU per task by 10-22%.
    """

    seconds: float
    until: float = 0.0
    full_read_at: float = -1.0  # the turn (its `now`) of the last read of a full pipe

    def begin(self, now: float, idle_seconds: float) -> None:
        """Rest from `now`: at most half the idle limit, so that output waiting in a pipe is
        read before that limit could take it for silence."""
        self.until = now + min(self.seconds, idle_seconds / 2)

    def heard(self, size: int, now: float, idle_seconds: float) -> None:
        """A read of `size` bytes in the turn at `now`: a little rests the pipes, unless a
        read in this same turn found a pipe full (the agent writes fast)."""
        if size >= REST_BELOW_BYTES:
            self.full_read_at = now
            self.until = now
        elif self.full_read_at != now:
            self.begin(now, idle_seconds)

    def resting(self, now: float) -> bool:
        return now < self.until


class LineSplitter:
    """Splits a byte stream on newlines; a line over `max_line` bytes is cut into pieces.

    With a `cut_before` (the Redactor's), a cut never falls inside a secret: the piece ends
    where the secret begins, and `lookahead` bytes past the limit are awaited before cutting.
    """

    def __init__(
        self,
        max_line: int,
        cut_before: Callable[[bytes, int], int] | None = None,
        lookahead: int = 0,
    ) -> None:
        self.max_line = max_line
        self.cut_before = cut_before
        self.lookahead = lookahead if cut_before is not None else 0
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
        while len(self.buffer) > self.max_line + self.lookahead:
            cut = self._cut_point(bytes(self.buffer[: self.max_line + self.lookahead]))
            out.append((bytes(self.buffer[:cut]), FLAG_PARTIAL))
            del self.buffer[:cut]
            self.continuing = True
        return out

    def _cut_point(self, data: bytes) -> int:
        if self.cut_before is None or len(data) <= self.max_line:
            return min(len(data), self.max_line)
        return self.cut_before(data, self.max_line)

    def _cut(self, line: bytes) -> list[tuple[bytes, int]]:
        pieces, start = [], 0
        while start < len(line):
            end = start + self._cut_point(line[start : start + self.max_line + self.lookahead])
            pieces.append((line[start:end], FLAG_PARTIAL))
            start = end
        return pieces

    def finish(self) -> list[tuple[bytes, int]]:
        """What is left when the stream closes: a last line without its newline."""
        if not self.buffer:
            return []
        rest, self.buffer = bytes(self.buffer), bytearray()
        if len(rest) <= self.max_line:
            return [(rest, FLAG_NO_NEWLINE | (FLAG_PARTIAL if self.continuing else 0))]
        pieces = self._cut(rest)  # held back for the lookahead: every piece is partial
        pieces[-1] = (pieces[-1][0], FLAG_PARTIAL | FLAG_NO_NEWLINE)
        return pieces


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
        return parsed.kind(), 0, parsed
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
