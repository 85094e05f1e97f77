"""fleetd's log never shows a traceback's local variables (they may hold secrets)."""

from __future__ import annotations

import pytest
from loguru import logger

from fleetd.runtime.lifecycle import configure_logging


@pytest.mark.parametrize("json_lines", [False, True])
def test_a_logged_traceback_does_not_print_locals(
    json_lines: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("test", "INFO", json_lines)
    try:
        secret = "sk-local-Known-Secret-0123456789"
        raise ValueError("boom " + secret[:2])
    except ValueError:
        logger.exception("failed")
    finally:
        logger.remove()
    err = capsys.readouterr().err
    assert "ValueError" in err
    assert "Known-Secret" not in err
