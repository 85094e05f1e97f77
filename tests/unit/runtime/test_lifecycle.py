"""What every fleetd process sets up at start: here, what its log lines may show."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from loguru import logger

from fleetd.runtime.lifecycle import configure_logging


@pytest.fixture(autouse=True)
def _default_logging_after() -> Iterator[None]:
    yield
    logger.remove()
    logger.configure(extra={})
    logger.add(sys.stderr)


def _fails_holding(secret: str) -> None:
    raise RuntimeError("something broke")


@pytest.mark.parametrize("json_lines", [False, True])
def test_a_logged_traceback_never_shows_local_values(
    capfd: pytest.CaptureFixture[str], json_lines: bool
) -> None:
    configure_logging("test", "INFO", json_lines)
    api_key = "sk-live-" + "7" * 32
    try:
        _fails_holding(api_key)
    except RuntimeError:
        logger.exception("the job failed")
    logged = capfd.readouterr().err
    assert "something broke" in logged and "_fails_holding" in logged
    assert api_key not in logged
