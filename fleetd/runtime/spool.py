"""Per-execution spool files: the worker appends each encoded event batch before sending it.

The spool is what makes events survive a dead recorder or a dead worker: the recorder fills
any gap in what it received from it, and re-ingests whole spools left by dead workers.
A record is a 4-byte little-endian length and the msgpack bytes of one `EventBatch`.
The writer holds an exclusive `flock` on the file while it lives, so a free lock means the
writer is gone (finished or dead) and the file is complete as far as it will ever be.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from fleetd.runtime.locks import FileLock

_LENGTH = struct.Struct("<I")


class SpoolWriter:
    """Appends records to one execution's spool, holding its lock until closed."""

    def __init__(self, path: Path) -> None:
        # Created under a temporary name and locked before it becomes visible, so the
        # recorder's sweep can never mistake a brand-new spool for an abandoned one.
        temp = path.with_suffix(".new")
        self.lock = FileLock(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self.lock.acquire()
        self.fd = self.lock.fd
        os.rename(temp, path)
        self.path = path
        self.size = 0

    def append(self, record: bytes) -> None:
        """One write call, so a killed writer leaves whole records behind, or a torn last one.

        A short write (a full disk) is undone and raised as ENOSPC: a torn record followed by
        whole ones would corrupt the framing of everything after it.
        """
        data = _LENGTH.pack(len(record)) + record
        try:
            written = os.write(self.fd, data)
        except OSError:
            self._truncate()
            raise
        if written != len(data):
            self._truncate()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        self.size += written

    def _truncate(self) -> None:
        """Cut a torn record off, back to the last whole one (O_APPEND-free, so seek too)."""
        os.ftruncate(self.fd, self.size)
        os.lseek(self.fd, self.size, os.SEEK_SET)

    def close(self) -> None:
        self.lock.release()
        self.fd = -1


def read_records(path: Path) -> Iterator[bytes]:
    """Every whole record of a spool, in order; a torn record at the end is ignored."""
    with path.open("rb") as handle:
        while True:
            header = handle.read(_LENGTH.size)
            if len(header) < _LENGTH.size:
                return
            (length,) = _LENGTH.unpack(header)
            body = handle.read(length)
            if len(body) < length:
                return
            yield body


def execution_of(path: Path) -> int | None:
    """The execution id a spool file is named for, or None for a foreign file."""
    if path.suffix != ".spool":
        return None
    try:
        return int(path.stem)
    except ValueError:
        return None
