"""Text for a person's terminal: control characters and escape sequences made visible.

Agent output and task text reach human output; a raw ESC or BEL from them would let an agent
set the terminal's title, clear the screen or hide lines. Each such character is shown as its
escape (`\\x1b`, `\\x07`, `\\u202e`) instead; `--json` output is escaped by JSON already.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, and C1 controls (0x9b is a one-byte CSI).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Invisible formatting characters that reorder or hide text (bidi overrides, zero width).
_FORMATS = re.compile(r"[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def visible(text: str) -> str:
    """`text` with every control character, but tab and newline, written as its escape."""
    text = _CONTROLS.sub(_escape, text)
    return _FORMATS.sub(_escape, text)


def visible_line(text: str) -> str:
    """`text` for one line of output: tabs and newlines escaped too."""
    return visible(text).replace("\t", "\\t").replace("\n", "\\n")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"
