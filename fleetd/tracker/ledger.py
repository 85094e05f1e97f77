"""The tracker's memory: one `Entry` per issue (and per follow-up) in tracker/ledger.json.

The queue holds each issue's task (its idempotency key is the issue); the ledger holds only
what the tracker did about it: the finish it reported, the branch it pushed, the pull request
it opened, the review comments it took. Lost, it costs at most a repeated comment: pull
requests are found by their branch before one is opened. Written whole and atomically.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import msgspec
from loguru import logger

from fleetd.tracker.logic import Entry

_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(dict[str, Entry])


def load(path: Path) -> dict[str, Entry]:
    try:
        return _decoder.decode(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, msgspec.DecodeError) as exc:
        # Starting afresh is safe (see the module's docstring); refusing to run is not.
        logger.warning("tracker ledger {} is unreadable ({}); starting a new one", path, exc)
        return {}


def save(path: Path, ledger: dict[str, Entry]) -> None:
    write_atomically(path, _encode(ledger))


def write_atomically(path: Path, data: bytes) -> None:
    """`data` as the whole of `path` (owner-only), never half-written."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
