"""A full disk while recording: the task fails saying why, and nothing already stored is lost.

The state directory sits on a real, small tmpfs (mounting needs root; CI runs as root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from fleetd.recorder.eventlog import EventLog
from fleetd.recorder.logic import Pending, Recorder
from fleetd.runtime.db import immediate, open_database
from fleetd.runtime.spool import SpoolWriter, read_records
from fleetd.worker.attempt import cut_short
from shared import messages as m
from shared.models import EventRecord, ExecutionResult
from shared.paths import StatePaths
from tests.support.fleet import FLEETD, Fleet, short_tempdir, wait_for
from tests.support.procs import processes_under
from tests.support.requires import needs_root, needs_tools

pytestmark = [pytest.mark.timeout(120), needs_root(), needs_tools("mount", "umount")]

# An agent that prints forever: whatever the disk holds, it fills it.
FLOOD = ["--", "sh", "-c", 'yes \'{"type":"flood","pad":"' + "x" * 200 + "\"}'"]


@contextlib.contextmanager
def small_disk(size: str, *options: str) -> Iterator[Path]:
    """A fresh tmpfs of `size`, unmounted (and removed) afterwards whatever happens."""
    root = short_tempdir("disk")
    mount = root / "m"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", "mode=0700", *options]),
         "tmpfs", str(mount)],
        check=True,
    )  # fmt: skip
    try:
        yield mount
    finally:
        for pid in processes_under(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_read_only_state_directory_is_named() -> None:
    with small_disk("1m", "ro") as disk:
        result = subprocess.run(
            [*FLEETD, "--foreground", "--state-dir", str(disk / "s")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot use state directory {disk / 's'}: Read-only file system" in result.stderr


def _rows(db_path: Path, sql: str, *args: object) -> list[tuple]:
    with contextlib.closing(apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)) as db:
        db.set_busy_timeout(5000)
        return db.execute(sql, args).fetchall()


def _events(state: Path, task: int) -> list[tuple[int, int, bytes]]:
    return _rows(
        state / "events.db",
        "SELECT e.execution_id, e.seq, e.payload FROM events e"
        " JOIN streams s ON s.execution_id = e.execution_id WHERE s.task_id = ?"
        " ORDER BY e.execution_id, e.seq",
        task,
    )


def test_spool_write_cut_short_by_a_full_disk_is_undone() -> None:
    with small_disk("64k") as disk:
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * 16384)
        path = disk / "1.spool"
        writer = SpoolWriter(path)
        written: list[bytes] = []
        with pytest.raises(OSError, match="No space left"):
            for n in range(100):  # 5 kB records: the last one fits only in part
                writer.append(bytes([n]) * 5000)
                written.append(bytes([n]) * 5000)
        assert written and list(read_records(path)) == written
        # Once there is room again (the operator cleaned up), later records stay readable.
        ballast.unlink()
        writer.append(b"after")
        writer.close()
        assert list(read_records(path)) == [*written, b"after"]


def test_a_transaction_cut_by_a_full_disk_raises_the_full_error() -> None:
    with small_disk("1m") as disk:
        conn = open_database(disk / "t.db", ["CREATE TABLE t (b BLOB)"])
        try:
            with pytest.raises(apsw.FullError), immediate(conn):
                conn.execute("INSERT INTO t VALUES (zeroblob(4000000))")
            assert not conn.in_transaction
            with immediate(conn):  # still usable for what fits
                conn.execute("INSERT INTO t VALUES (1)")
        finally:
            conn.close()


def _batch(first: int, last: int) -> m.EventBatch:
    events = [
        EventRecord(1, seq, seq, "json", 0, b"%d" % seq + b" " * 1000)
        for seq in range(first, last + 1)
    ]
    return m.EventBatch(task=1, execution=1, events=events)


def _fill(disk: Path) -> None:
    """Take every free byte of the disk."""
    fd = os.open(disk / "ballast", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


def test_recorder_on_a_full_disk_seals_what_it_stored_and_frees_the_spool() -> None:
    codec = m.RECORDER_REQUESTS
    with small_disk("2m") as disk:
        paths = StatePaths(disk / "s")
        paths.create()
        recorder = Recorder(EventLog.open(paths.events_db), paths)
        try:
            spool = SpoolWriter(paths.spool_file(1))
            pending = Pending()
            for item in (_batch(1, 10), _batch(11, 300)):
                spool.append(codec.encode(item))
            recorder.accept(_batch(1, 10), codec.encode(_batch(1, 10)), pending)
            assert recorder.commit(pending, 1)
            spool.close()
            _fill(disk)  # events 11..300 are in the spool only, and now there is no room
            pending = Pending()
            end = m.StreamEnd(task=1, execution=1, last_seq=300, spool=str(spool.path))
            recorder.seal(end, b"w1", b"ref", pending)
            assert not recorder.commit(pending, 2)
            cut = recorder.cut_short(pending.seals, 2)
            assert [(peer, sealed.last_seq) for peer, _, sealed, _ in cut] == [(b"w1", 10)]
            assert not spool.path.exists()  # its space is what lets the queue record the end
            stored = recorder.log.page(1, 0, 0, 1000)
            assert [e.seq for e in stored] == list(range(1, 11))
        finally:
            recorder.log.close()


def test_a_stream_sealed_short_cannot_report_success() -> None:
    done = m.Finished(execution=5, outcome="succeeded", result=ExecutionResult(exit_code=0))
    cut = cut_short(done, stored=10, printed=300)
    assert cut.outcome == "failed"
    assert cut.result.error == "events 11 to 300 could not be stored (disk full)"
    failed = m.Finished(
        execution=5, outcome="failed", result=ExecutionResult(error="agent said no")
    )
    assert cut_short(failed, 0, 1).result.error == (
        "agent said no; events 1 to 1 could not be stored (disk full)"
    )


def test_full_disk_fails_the_task_with_the_reason_and_keeps_what_was_stored(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "copy"
    with small_disk("24m") as disk:
        fleet = Fleet(disk / "s", {**os.environ, "FLEET_WORKER_GRACE_SECONDS": "1"})
        fleet.log_path = tmp_path / "fleetd.log"  # the log must not share the full disk
        try:
            fleet.start("--workers", "1")
            script = f'for i in $(seq 1 100); do echo "{{\\"n\\":$i}}" | tee -a {copy}; done'
            before = fleet.enqueue("before", "--", "sh", "-c", script)
            fleet.wait_state(before, "succeeded")
            stored_before = _events(fleet.state_dir, before)
            assert [p for _, _, p in stored_before] == copy.read_bytes().splitlines()

            flood = fleet.enqueue("flood", *FLOOD)
            shown = fleet.wait_state(flood, "failed", "succeeded", "timed_out", timeout=90)
            assert shown["state"] == "failed", shown
            assert shown["attempts"] == 1  # failed for its own reason, not retried as lost
            error = shown["result"]["error"]
            assert "cannot record the agent's output: No space left on device" in error
            assert shown["result"]["failure_class"] == "permanent"  # not retried while full
            assert shown["result"]["reason"].startswith("cannot record the agent's output")
            # The flood's stream is what was kept: gap-free from 1.
            seqs = [seq for _, seq, _ in _events(fleet.state_dir, flood)]
            assert seqs == list(range(1, len(seqs) + 1))
            # Nothing stored before the disk filled was lost, and both databases are sound.
            assert _events(fleet.state_dir, before) == stored_before
            assert fleet.show(before)["state"] == "succeeded"
            for db in ("queue.db", "events.db"):
                assert _rows(fleet.state_dir / db, "PRAGMA integrity_check") == [("ok",)]
            assert fleet.proc is not None and fleet.proc.poll() is None
            fleet.ctl("stop")
            assert fleet.wait_exit(30) == 0
            wait_for(lambda: not processes_under(fleet.state_dir), 10, what="no agent left")
        finally:
            fleet.close()
