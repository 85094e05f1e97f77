"""The tracker process (`fleetd: tracker`): polls each watched repository when due, carries
the poll out (`sync.Sync`), and writes its status for `fleetctl tracker`.

A client of the fleet like fleetctl: it reaches the queue only through the control socket.
The token is read once from the environment variable the config names and is held only by
the GitHub client and the pusher, in memory.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
from loguru import logger

from fleetd.runtime.lifecycle import ShutdownSignal, child_start
from fleetd.tracker import ledger as ledger_file
from fleetd.tracker.base import TrackerError
from fleetd.tracker.github import GitHub
from fleetd.tracker.logic import Schedule
from fleetd.tracker.mirror import Mirrors
from fleetd.tracker.push import Pusher
from fleetd.tracker.results import Results
from fleetd.tracker.sync import Sync
from shared.client import ControlClient, probe
from shared.config import FleetConfig
from shared.errors import FleetError
from shared.tracker import RepoStatus, TaskLink, TrackerStatus, status_file, tracker_dir

CONTROL_TIMEOUT = 30.0
START_WAIT_SECONDS = 30.0
LONGEST_WAIT = 5.0  # the loop wakes at least this often (a clock step, a late poll)


def run(config: FleetConfig) -> None:
    """The tracker's entry point (started by the supervisor when [tracker.github] is set)."""
    shutdown = child_start("tracker", "fleetd: tracker", config.log_level, config.log_json)
    github_config = config.tracker.github
    assert github_config is not None, "the supervisor starts a tracker only when configured"
    paths = config.paths()
    token = os.environ.get(github_config.token_env, "")
    github = GitHub(github_config.api_url, token)
    queue = ControlClient(paths.control_socket, timeout=CONTROL_TIMEOUT)
    pusher = Pusher(github.push_headers(), os.environ, [token])
    mirrors = Mirrors(tracker_dir(paths.root) / "repos", paths, pusher)
    sync = Sync(
        config=github_config,
        tracker=github,
        queue=queue,
        results=Results(github_config, github, pusher, mirrors),
        mirrors=mirrors,
        ledger_path=tracker_dir(paths.root) / "ledger.json",
        has_token=bool(token),
    )
    schedule = Schedule.of(list(github_config.repos), github_config.poll_seconds)
    logger.info("tracker watching {} on {}", ", ".join(github_config.repos), github.api_url)
    try:
        _wait_for_fleetd(paths.control_socket, shutdown)
        _loop(sync, schedule, Status(status_file(paths.root), github), shutdown)
    finally:
        queue.close()
    logger.info("tracker stopped")


def _loop(sync: Sync, schedule: Schedule, status: Status, shutdown: ShutdownSignal) -> None:
    status.write(sync, schedule)
    while shutdown.received is None:
        due = schedule.due(time.time())
        if due:
            if not _polled_unless_stopped(sync, schedule, due, shutdown):
                logger.info("tracker stopping in the middle of a poll; the next start redoes it")
                return
            status.write(sync, schedule)
        wait = min(max(schedule.next_due() - time.time(), 0.0), LONGEST_WAIT)
        ready, _, _ = select.select([shutdown.fd], [], [], wait)
        if ready:
            shutdown.drain()


def _wait_for_fleetd(control_socket: Path, shutdown: ShutdownSignal) -> None:
    """Until the supervisor's control socket answers (it binds it after starting us), bounded:
    past the bound, the first poll's error says what is wrong."""
    deadline = time.monotonic() + START_WAIT_SECONDS
    while shutdown.received is None and time.monotonic() < deadline:
        try:
            probe(control_socket)
            return
        except FleetError:
            select.select([shutdown.fd], [], [], 0.1)


def _polled_unless_stopped(
    sync: Sync, schedule: Schedule, repos: list[str], shutdown: ShutdownSignal
) -> bool:
    """Poll `repos` on a helper thread while this one watches for the stop; False if the stop
    came first. A request to GitHub or a push may block for its whole timeout, and SIGTERM does
    not interrupt it; the helper is a daemon thread, so the process exits without waiting for
    it (its git child, in a session of its own, is ended by the supervisor). Every step of a
    poll is idempotent or written down when done, so a poll cut short is simply made again."""
    done_read, done_write = os.pipe2(os.O_CLOEXEC)

    def polls() -> None:
        try:
            for repo in repos:
                if shutdown.received is not None:
                    return
                _poll(sync, schedule, repo)
        finally:
            with contextlib.suppress(OSError):  # the loop stopped waiting: nobody reads
                os.write(done_write, b".")
            os.close(done_write)

    threading.Thread(target=polls, name="tracker-poll", daemon=True).start()
    try:
        ready, _, _ = select.select([done_read, shutdown.fd], [], [])
        while done_read not in ready and shutdown.received is None:
            shutdown.drain()  # a signal that is not the stop
            ready, _, _ = select.select([done_read, shutdown.fd], [], [])
        return done_read in ready
    finally:
        os.close(done_read)  # the write end is the thread's, which may outlive this call


def _poll(sync: Sync, schedule: Schedule, repo: str) -> None:
    try:
        sync.poll(repo)
    except (TrackerError, FleetError) as exc:
        error = exc if isinstance(exc, TrackerError) else TrackerError(str(exc))
        if schedule.failed(repo, error, time.time()):
            logger.error("tracker: {}: {}", repo, error)
        return
    except Exception:  # one bad answer must not end the tracker; the next poll tries again
        logger.exception("tracker failed polling {}", repo)
        schedule.failed(repo, TrackerError("internal error; see the fleetd log"), time.time())
        return
    schedule.succeeded(repo, time.time())


@dataclass(frozen=True)
class Status:
    """The status file `fleetctl tracker` reads: written after each round of polls."""

    path: Path
    github: GitHub

    def write(self, sync: Sync, schedule: Schedule) -> None:
        try:
            ledger_file.write_atomically(self.path, _encode(self._status(sync, schedule)))
        except OSError as exc:
            logger.warning("cannot write the tracker status {}: {}", self.path, exc)

    def _status(self, sync: Sync, schedule: Schedule) -> TrackerStatus:
        budget = self.github.budget
        return TrackerStatus(
            tracker="github",
            api_url=self.github.api_url,
            pid=os.getpid(),
            updated_at=time.time(),
            rate_limit=budget.limit,
            rate_remaining=budget.remaining,
            rate_reset_at=budget.reset_at,
            repos=[
                RepoStatus(
                    repo=w.repo,
                    phase=w.phase.value,
                    polls=w.polls,
                    last_poll=w.last_poll,
                    next_poll=w.next_poll,
                    errors=w.errors,
                    error=w.error,
                )
                for w in schedule.watches.values()
            ],
            links=[
                TaskLink(
                    task=entry.task,
                    issue=f"{entry.repo}#{entry.number}",
                    issue_url=entry.issue_url,
                    pull_url=entry.pull_url,
                )
                for entry in sync.ledger.values()
                if entry.task
            ],
        )


_encode = msgspec.json.Encoder().encode
