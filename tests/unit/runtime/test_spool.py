"""Spool files: records read back in order, torn tails ignored, the writer's lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.runtime.locks import FileLock
from fleetd.runtime.spool import SpoolWriter, execution_of, read_records
from shared.paths import StatePaths
from tests.unit.recorder.streams import BATCHES, CODEC, EXECUTION, write_spool


def test_spool_records_read_back_in_order(paths: StatePaths) -> None:
    path = write_spool(paths, BATCHES)
    assert [CODEC.decode(r) for r in read_records(path)] == BATCHES


def test_torn_last_record_is_ignored(paths: StatePaths) -> None:
    path = write_spool(paths, BATCHES)
    size = path.stat().st_size
    last = len(CODEC.encode(BATCHES[2])) + 4
    with path.open("r+b") as handle:
        handle.truncate(size - last // 2)
    assert [CODEC.decode(r) for r in read_records(path)] == BATCHES[:2]


def test_torn_length_header_is_ignored(paths: StatePaths) -> None:
    path = write_spool(paths, BATCHES[:1])
    with path.open("ab") as handle:
        handle.write(b"\x05\x00")
    assert [CODEC.decode(r) for r in read_records(path)] == BATCHES[:1]


def test_open_writer_holds_the_lock_and_close_frees_it(paths: StatePaths) -> None:
    writer = SpoolWriter(paths.spool_file(EXECUTION))
    assert FileLock.try_existing(paths.spool_file(EXECUTION)) is None
    writer.close()
    lock = FileLock.try_existing(paths.spool_file(EXECUTION))
    assert lock is not None
    lock.release()


def test_writer_leaves_no_temporary_file(paths: StatePaths) -> None:
    write_spool(paths, BATCHES)
    assert sorted(p.name for p in paths.spool_dir.iterdir()) == [f"{EXECUTION}.spool"]


@pytest.mark.parametrize(
    ("name", "expected"), [("12.spool", 12), ("12.new", None), ("x.spool", None), ("12", None)]
)
def test_execution_of_spool_names(name: str, expected: int | None) -> None:
    assert execution_of(Path(name)) == expected
