"""Human output shows agent and task text, never raw terminal controls."""

from __future__ import annotations

from fleetctl.common import one_line, print_table
from fleetctl.display import visible, visible_line
from fleetctl.events import _human
from shared.models import EventRecord


def test_escape_sequences_become_visible_text() -> None:
    raw = "\x1b]0;TITLE\x07\x1b[2J\x9b31m\x7f\x00 ok"
    assert visible(raw) == "\\x1b]0;TITLE\\x07\\x1b[2J\\x9b31m\\x7f\\x00 ok"


def test_tab_and_newline_stay_except_on_one_line() -> None:
    assert visible("a\tb\nc") == "a\tb\nc"
    assert visible_line("a\tb\nc\r") == "a\\tb\\nc\\x0d"


def test_bidi_overrides_are_shown() -> None:
    assert visible("abc\u202edef") == "abc\\u202edef"


def test_plain_unicode_is_left_alone() -> None:
    assert visible("café ✓ 日本") == "café ✓ 日本"


def test_one_line_and_tables_escape(capsys) -> None:
    assert one_line("\x1b[2J x") == "\\x1b[2J x"
    print_table(("A",), [("\x1b]0;T\x07",)])
    assert "\x1b" not in capsys.readouterr().out


def test_event_preview_escapes_the_payload() -> None:
    event = EventRecord(1, 1, 0, "text", 1, b"\x1b]0;TITLE\x07\x1b[2J")
    line = _human(event)
    assert "\x1b" not in line and "\x07" not in line
    assert "\\x1b]0;TITLE\\x07\\x1b[2J" in line
