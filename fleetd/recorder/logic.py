"""The recorder's logic, socket-free: event batches, stream ends, queries and `now` in;
replies and feed publications out.

It stores every event in batches (the only writer of `events.db`), publishes what it stored,
and seals finished streams. Events arrive over ZeroMQ, but the worker's spool file is the
source of truth: a batch that skips ahead (the recorder was down, or its queue was lost) is
preceded by the missing events read back from the spool, and a spool whose writer died is
ingested whole by the sweep. Its process module (`fleetd.recorder.process`) owns the sockets.
"""

from __future__ import annotations

import contextlib
import enum
import time
from dataclasses import dataclass, field
from pathlib import Path

import apsw
from loguru import logger

from fleetd.runtime.locks import FileLock
from fleetd.runtime.routing import ToPeer
from fleetd.runtime.spool import execution_of, read_records
from fleetd.stores.errors import StoreUnavailable
from fleetd.stores.events import EventStore
from shared import messages as m
from shared.models import EventRecord
from shared.paths import StatePaths

SWEEP_INTERVAL_US = 2_000_000
UNBORN_GRACE_SECONDS = 60.0


class Phase(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"  # stopping: store what is still queued, then sweep once more
    STOPPED = "stopped"


@dataclass(frozen=True)
class Publish:
    """Stored events or a seal, for the feed's followers (already encoded)."""

    task: int
    payload: bytes


Outgoing = ToPeer | Publish


@dataclass
class Pending:
    """What one loop iteration collected, stored in one transaction."""

    runs: list[tuple[int, int, list[EventRecord]]] = field(default_factory=list)
    published: list[tuple[int, bytes]] = field(default_factory=list)
    seals: list[tuple[bytes, bytes, m.StreamSealed, Path | None]] = field(default_factory=list)
    count: int = 0

    @property
    def empty(self) -> bool:
        return not self.runs and not self.seals


class Recorder:
    """The recorder's logic without sockets: accept batches, fill gaps, seal, sweep."""

    def __init__(self, log: EventStore, paths: StatePaths, batch_max: int = 20_000) -> None:
        self.log = log
        self.paths = paths
        self.batch_max = batch_max
        # Highest contiguous seq stored, per open stream; dropped when the stream is sealed,
        # so memory does not grow with history.
        self.stored_upto: dict[int, int] = {}
        self.codec = m.RECORDER_REQUESTS
        self.phase = Phase.RUNNING
        self.pending = Pending()
        self.next_sweep = 0

    # --- in ----------------------------------------------------------------------------------

    def handle(
        self, peer: bytes, ref: bytes, request: m.Message, raw: bytes, now: int
    ) -> list[Outgoing]:
        """One request (`raw` is its encoding: a batch is republished as it came)."""
        try:
            return self._handle(peer, ref, request, raw)
        except StoreUnavailable as exc:
            # The spool holds what a batch or an end carried: it is read again once the
            # database answers. A query hears why it went unanswered.
            self._forget_positions()
            if isinstance(request, m.EventBatch | m.StreamEnd):
                return []
            return [ToPeer(peer, ref, m.ErrorReply(code="unavailable", message=str(exc)))]

    def _handle(self, peer: bytes, ref: bytes, request: m.Message, raw: bytes) -> list[Outgoing]:
        match request:
            case m.EventBatch():
                self.accept(request, raw, self.pending)
            case m.StreamEnd():
                self.seal(request, peer, ref, self.pending)
            case m.GetEvents():
                return [ToPeer(peer, ref, self._page(request))]
            case m.CountEvents():
                return [ToPeer(peer, ref, m.EventCount(events=self.log.total_events()))]
            case _:
                text = f"the recorder does not serve {type(request).__name__}"
                return [ToPeer(peer, ref, m.ErrorReply(code="bad_request", message=text))]
        return []

    @property
    def full(self) -> bool:
        """Enough events wait for one transaction: store them before taking more."""
        return self.pending.count >= self.batch_max

    def step(self, now: int) -> list[Outgoing]:
        """Sweep abandoned spools when due, then store and tell what was collected."""
        if self.phase is Phase.DRAINING and self.pending.empty:
            # Nothing more came in: take in the spools of workers that are gone, and stop.
            self._sweep_if_reachable(self.pending)
            self.phase = Phase.STOPPED
        elif self.phase is Phase.RUNNING and now >= self.next_sweep:
            self.next_sweep = now + SWEEP_INTERVAL_US
            self._sweep_if_reachable(self.pending)
        pending, self.pending = self.pending, Pending()
        return self._flush(pending, now)

    def _sweep_if_reachable(self, pending: Pending) -> None:
        try:
            self.sweep(pending)
        except StoreUnavailable:
            self._forget_positions()  # swept again at the next sweep

    def _forget_positions(self) -> None:
        """The database did not answer: how far each stream is stored is asked again later."""
        self.stored_upto.clear()

    def _postpone(self, pending: Pending) -> None:
        """Nothing was stored: no follower hears of it and no worker of its seal (a worker
        stops waiting after a bound and leaves its spool, which the sweep takes in later)."""
        self._forget_positions()
        logger.debug("the event store is unreachable: {} events wait in the spools", pending.count)

    def stop(self) -> None:
        """The fleet is stopping: store what is still queued, then stop."""
        if self.phase is Phase.RUNNING:
            self.phase = Phase.DRAINING

    # --- mechanics ---------------------------------------------------------------------------

    def _upto(self, execution: int) -> int:
        upto = self.stored_upto.get(execution)
        if upto is None:
            upto = self.log.last_seq(execution)
            self.stored_upto[execution] = upto
        return upto

    def accept(self, batch: m.EventBatch, raw: bytes, pending: Pending) -> None:
        """Queue a batch for storage, after any events it skipped over."""
        upto = self._upto(batch.execution)
        events = [e for e in batch.events if e.seq > upto]
        if not events:
            return
        if events[0].seq > upto + 1:
            gap = self._from_spool(batch.execution, upto, events[0].seq - 1)
            events = gap + events
        if not _contiguous(events, upto):
            logger.error(
                "execution {}: events after {} are missing even from the spool",
                batch.execution,
                upto,
            )
        self.stored_upto[batch.execution] = events[-1].seq
        pending.runs.append((batch.task, batch.execution, events))
        pending.count += len(events)
        if len(events) == len(batch.events):
            pending.published.append((batch.task, raw))
        else:
            filled = m.EventBatch(task=batch.task, execution=batch.execution, events=events)
            pending.published.append((batch.task, m.FEED.encode(filled)))

    def seal(self, end: m.StreamEnd, peer: bytes, ref: bytes, pending: Pending) -> None:
        """Complete a stream up to `last_seq` (from the spool if needed), then seal it."""
        upto = self._upto(end.execution)
        if end.last_seq > upto:
            events = self._from_spool(end.execution, upto, end.last_seq)
            if events:
                self.stored_upto[end.execution] = events[-1].seq
                pending.runs.append((end.task, end.execution, events))
                pending.count += len(events)
                batch = m.EventBatch(task=end.task, execution=end.execution, events=events)
                pending.published.append((end.task, m.FEED.encode(batch)))
        sealed = m.StreamSealed(task=end.task, execution=end.execution, last_seq=end.last_seq)
        spool = Path(end.spool) if end.spool else None
        pending.seals.append((peer, ref, sealed, spool))

    def _from_spool(self, execution: int, after: int, upto: int) -> list[EventRecord]:
        path = self.paths.spool_file(execution)
        found: list[EventRecord] = []
        try:
            for record in read_records(path):
                batch = self.codec.decode(record)
                assert isinstance(batch, m.EventBatch)
                found.extend(e for e in batch.events if after < e.seq <= upto)
        except FileNotFoundError:
            logger.error("execution {}: spool {} is gone", execution, path)
        found.sort(key=lambda e: e.seq)
        return found

    def commit(self, pending: Pending, now: int) -> bool:
        """Store what was collected in one transaction; False if the disk is full."""
        sealed = [(s.task, s.execution) for _, _, s, _ in pending.seals]
        try:
            if pending.runs or sealed:
                self.log.store(pending.runs, sealed, now)
        except apsw.FullError as exc:
            # Nothing was stored, and the spools still hold every event: forget how far we
            # thought we were, so the next batch or sweep starts from what the database has.
            for _, execution, _ in pending.runs:
                self.stored_upto.pop(execution, None)
            logger.error("cannot store {} events ({}); they wait in the spools", pending.count, exc)
            return False
        for _, execution in sealed:
            self.stored_upto.pop(execution, None)
        return True

    def cut_short(
        self, seals: list[tuple[bytes, bytes, m.StreamSealed, Path | None]], now: int
    ) -> list[tuple[bytes, bytes, m.StreamSealed, Path | None]]:
        """The disk is full and these streams have ended: seal each at what is stored.

        Their workers wait for the seal and the queue must record how their runs ended, which
        takes space: what the spool holds beyond the stored events is dropped, and deleting
        the spool frees that space. Swept spools (no worker waiting) are kept for a retry.
        """
        out = []
        for peer, ref, sealed, spool in seals:
            if not peer:
                continue
            if spool is not None:
                spool.unlink(missing_ok=True)
            stored = self.log.last_seq(sealed.execution)
            logger.error(
                "execution {}: disk full; events {} to {} were not stored and are dropped",
                sealed.execution,
                stored + 1,
                sealed.last_seq,
            )
            with contextlib.suppress(apsw.FullError):
                self.log.store([], [(sealed.task, sealed.execution)], now)
            self.stored_upto.pop(sealed.execution, None)
            cut = m.StreamSealed(task=sealed.task, execution=sealed.execution, last_seq=stored)
            out.append((peer, ref, cut, None))
        return out

    def sweep(self, pending: Pending) -> list[int]:
        """Ingest spools whose writer is gone (a worker died, or the recorder missed the end)."""
        swept: list[int] = []
        for path in sorted(self.paths.spool_dir.iterdir()):
            if path.suffix == ".new":
                self._drop_unborn(path)
                continue
            execution = execution_of(path)
            if execution is None:
                continue
            lock = FileLock.try_existing(path)
            if lock is None:
                continue  # its worker is still writing
            try:
                self._ingest_whole(execution, path, pending)
            finally:
                lock.release()
            swept.append(execution)
        return swept

    def _ingest_whole(self, execution: int, path: Path, pending: Pending) -> None:
        task, last = None, self._upto(execution)
        for record in read_records(path):
            batch = self.codec.decode(record)
            assert isinstance(batch, m.EventBatch)
            task = batch.task
            self.accept(batch, record, pending)
            last = max(last, batch.events[-1].seq if batch.events else 0)
        if task is None:
            path.unlink(missing_ok=True)
            return
        sealed = m.StreamSealed(task=task, execution=execution, last_seq=last)
        pending.seals.append((b"", b"", sealed, path))
        logger.info("recovered {} events of execution {} from its spool", last, execution)

    def _drop_unborn(self, path: Path) -> None:
        """A `.new` spool whose writer died before naming it; young ones may be mid-creation."""
        try:
            if time.time() - path.stat().st_mtime < UNBORN_GRACE_SECONDS:
                return
        except FileNotFoundError:
            return
        lock = FileLock.try_existing(path)
        if lock is not None:
            path.unlink(missing_ok=True)
            lock.release()

    def _page(self, request: m.GetEvents) -> m.EventPage:
        limit = request.limit  # bounded at decode (1 to m.PAGE_LIMIT_MAX)
        if request.latest:
            return m.EventPage(events=self.log.latest(request.task, limit), more=False)
        events = self.log.page(request.task, request.after_execution, request.after_seq, limit)
        return m.EventPage(events=events, more=len(events) == limit)

    def _flush(self, pending: Pending, now: int) -> list[Outgoing]:
        """Commit, then tell: followers and sealing workers hear only of stored events."""
        if pending.empty:
            return []
        try:
            stored = self.commit(pending, now)
        except StoreUnavailable:
            self._postpone(pending)
            return []
        if not stored:
            # A full disk. Followers hear nothing; a worker waiting on its ended stream hears
            # where the stream was cut short.
            pending.published = []
            pending.seals = self.cut_short(pending.seals, now)
        out: list[Outgoing] = [Publish(task, raw) for task, raw in pending.published]
        for peer, ref, sealed, spool in pending.seals:
            if spool is not None:
                spool.unlink(missing_ok=True)
            out.append(Publish(sealed.task, m.FEED.encode(sealed)))
            if peer:
                out.append(ToPeer(peer, ref, sealed))
        return out


def _contiguous(events: list[EventRecord], upto: int) -> bool:
    return all(e.seq == upto + i + 1 for i, e in enumerate(events))
