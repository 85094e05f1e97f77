"""uvicorn's server as the web role runs it."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn
from loguru import logger


class Server(uvicorn.Server):
    """Ends on SIGTERM only (SIGINT is the supervisor's to act on), and does not raise the
    signal again once stopped (uvicorn does, which would end the process with -15, not 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = signal.signal(signal.SIGTERM, self.handle_exit)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


class ToLoguru(logging.Handler):
    """uvicorn's own log records (it logs through `logging`) in fleetd's log, as every other
    line is: one format, one level setting, plain tracebacks."""

    def emit(self, record: logging.LogRecord) -> None:
        known = ("DEBUG", "INFO", "WARNING", "ERROR")
        level = record.levelname if record.levelname in known else "ERROR"
        logger.opt(exception=record.exc_info).log(level, "uvicorn: {}", record.getMessage())


def server_for(app: object) -> Server:
    handler = ToLoguru(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers = [handler]
        uvicorn_logger.propagate = False
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    return Server(config)
