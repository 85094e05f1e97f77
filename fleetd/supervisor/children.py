"""The supervisor's children: started from a clean fork server, restarted with backoff.

Children are forked by multiprocessing's fork server, which is started before the supervisor
opens any ZeroMQ context or database, so every child (first start or restart) begins clean.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from loguru import logger

from fleetd.runtime.lifecycle import WhenOrphaned, run_as_child
from fleetd.supervisor.generation import Generation
from shared.config import FleetConfig
from shared.models import ProcessView

RESTART_BACKOFF_FIRST = 0.1
END_POLL_SECONDS = 0.05
KILLED_JOIN_SECONDS = 5.0
HELPER_STOP_SECONDS = 5.0


class CrashLoop(Exception):
    """A child died too often within the crash-loop window."""


@dataclass(frozen=True)
class Roles:
    """The entry points of the processes the supervisor starts, given by fleetd's main, so
    that the supervisor needs none of the other roles' code."""

    broker: Callable[[FleetConfig, bool], None]  # (config, recover after a crash?)
    recorder: Callable[[FleetConfig], None]
    worker: Callable[[FleetConfig, str, str], None]  # (config, role, worker id)
    web: Callable[[FleetConfig, socket.socket], None] | None = None  # (config, its listener)
    tracker: Callable[[FleetConfig], None] | None = None  # started when [tracker.github] is set

    def modules(self) -> list[str]:
        """The modules holding them, for the fork server to import once."""
        entries = (self.broker, self.recorder, self.worker, self.web, self.tracker)
        return sorted({entry.__module__ for entry in entries if entry is not None})


@dataclass
class Child:
    """One supervised role and its current process."""

    role: str
    target: Callable[..., None]
    args: Callable[[bool], tuple[Any, ...]]  # given "is this the first start?"
    worker: str | None = None  # the worker id (`w3`) of a worker's role (`worker 3`)
    process: BaseProcess | None = None
    started: int = 0
    deaths: collections.deque[float] = field(default_factory=collections.deque)
    restart_at: float | None = None
    backoff: float = RESTART_BACKOFF_FIRST
    restartable: bool = True
    when_orphaned: WhenOrphaned = WhenOrphaned.STOP
    # A crash loop of an essential child stops the fleet; of another (the dashboard), only
    # its restarts: the queue runs on without it.
    essential: bool = True

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Children:
    """Starts, watches and restarts the supervisor's children."""

    def __init__(
        self, backoff_max: float, crash_loop_restarts: int, crash_loop_window: float
    ) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.backoff_max = backoff_max
        self.crash_loop_restarts = crash_loop_restarts
        self.crash_loop_window = crash_loop_window
        self.children: dict[str, Child] = {}
        self.generation: Generation | None = None
        # The sentinels of the processes started and not yet seen dead, kept as state: asking
        # each process (a waitpid) on every loop cost a 64-worker supervisor 35% of its CPU.
        self.watched: dict[int, Child] = {}

    def define(
        self, config: FleetConfig, roles: Roles, web_listener: socket.socket | None = None
    ) -> None:
        """The broker, the recorder, `config.workers` workers and the web process (given its
        listening socket); the fork server imports their modules once, so that every fork
        starts warm."""
        self.context.set_forkserver_preload(roles.modules())
        self.generation = Generation(config.paths())
        self.add(Child("broker", roles.broker, lambda first: (config, first)))
        self.add(Child("recorder", roles.recorder, lambda first: (config,)))
        if roles.tracker is not None and config.tracker.github is not None:
            self.add(Child("tracker", roles.tracker, lambda first: (config,)))
        for index in range(1, config.workers + 1):
            role, worker = f"worker {index}", f"w{index}"
            args = (config, role, worker)
            self.add(
                Child(
                    role,
                    roles.worker,
                    lambda first, a=args: a,
                    worker=worker,
                    when_orphaned=WhenOrphaned.END_AGENTS,
                )
            )
        if roles.web is not None and web_listener is not None:
            # The supervisor keeps the socket open: a restarted web process serves it again.
            args = (config, web_listener)
            self.add(Child("web", roles.web, lambda first: args, essential=False))

    def add(self, child: Child) -> None:
        self.children[child.role] = child

    def start(self, child: Child) -> None:
        assert self.generation is not None, "define() first"
        entry = (child.target, child.args(child.started == 0))
        process = self.context.Process(
            target=run_as_child,
            args=(*entry, child.when_orphaned, self.generation.lock_path),
            name=child.role,
            daemon=False,
        )
        process.start()
        child.process = process
        self.watched[process.sentinel] = child
        child.started += 1
        child.restart_at = None
        logger.debug("started {} (pid {})", child.role, process.pid)
        self.generation.record(self._generation_pids())

    def _generation_pids(self) -> dict[str, int]:
        """Every process of this fleetd but the supervisor, by role."""
        pids = {role: c.pid for role, c in self.children.items() if c.alive and c.pid}
        fork_server, tracker = self._helpers()
        for role, helper, attribute in (
            ("fork server", fork_server, "_forkserver_pid"),
            ("resource tracker", tracker, "_pid"),
        ):
            pid = getattr(helper, attribute, None)
            if pid:
                pids[role] = pid
        return pids

    @staticmethod
    def _helpers() -> tuple[Any, Any]:
        """multiprocessing's fork server and resource tracker (None before they start)."""
        from multiprocessing import forkserver, resource_tracker

        return (
            getattr(forkserver, "_forkserver", None),
            getattr(resource_tracker, "_resource_tracker", None),
        )

    def start_all(self) -> None:
        for child in self.children.values():
            self.start(child)

    def sentinels(self) -> dict[int, Child]:
        """The children to watch for an exit, by the fd that becomes readable when they die."""
        return self.watched

    def on_exit(self, child: Child, now: float) -> int | None:
        """Collect a dead child's exit code and schedule its restart (or raise CrashLoop)."""
        assert child.process is not None
        self.watched.pop(child.process.sentinel, None)
        child.process.join(timeout=0)
        code = child.process.exitcode
        if not child.restartable:
            return code
        child.deaths.append(now)
        while child.deaths and now - child.deaths[0] > self.crash_loop_window:
            child.deaths.popleft()
        if len(child.deaths) > self.crash_loop_restarts:
            deaths = (
                f"{child.role} died {len(child.deaths)} times within "
                f"{self.crash_loop_window:g} s (last exit code {code})"
            )
            if not child.essential:
                child.restartable = False
                raise CrashLoop(f"{deaths}; fleetd runs on without it (see its log)")
            raise CrashLoop(f"{deaths}; stopping the fleet")
        child.restart_at = now + child.backoff
        child.backoff = min(child.backoff * 2, self.backoff_max)
        return code

    def restart_due(self, now: float) -> list[Child]:
        due = [
            c for c in self.children.values() if c.restart_at is not None and now >= c.restart_at
        ]
        for child in due:
            self.start(child)
        return due

    def calm(self, now: float) -> None:
        """A child that has stayed up a while gets its short backoff back."""
        for child in self.children.values():
            if child.alive and child.deaths and now - child.deaths[-1] > self.crash_loop_window:
                child.backoff = RESTART_BACKOFF_FIRST

    def signal(self, roles: list[str], sig: int) -> None:
        for role in roles:
            child = self.children[role]
            child.restartable = False
            child.restart_at = None
            if child.alive and child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, sig)

    def alive_roles(self, roles: list[str] | None = None) -> list[str]:
        """Those of `roles` (default: every child) whose process is alive."""
        wanted = self.children if roles is None else roles
        return [role for role in wanted if self.children[role].alive]

    def worker_roles(self) -> list[str]:
        return [role for role, child in self.children.items() if child.worker is not None]

    def worker_of(self, role: str) -> str | None:
        """The worker id of a worker's role; None for the broker and the recorder."""
        return self.children[role].worker

    def views(self) -> list[ProcessView]:
        """Every child as `status` shows it; alive until its exit was seen (no syscall each)."""
        return [
            ProcessView(
                role=c.role,
                pid=c.pid,
                alive=c.process is not None and c.process.sentinel in self.watched,
                restarts=max(0, c.started - 1),
                worker=c.worker,
            )
            for c in self.children.values()
        ]

    def managed_pids(self) -> set[int]:
        """Pids multiprocessing itself looks after (its fork server and resource tracker)."""
        fork_server, tracker = self._helpers()
        pids = {getattr(fork_server, "_forkserver_pid", None), getattr(tracker, "_pid", None)}
        return {pid for pid in pids if pid}

    def end_all(self, timeout: float) -> list[str]:
        """The last word of a supervisor whose loop failed (after a stop, nothing is left):
        the workers first (they end their agents and report to the broker), then the rest,
        each SIGTERMed and SIGKILLed past its share of `timeout`. Returns the roles killed."""
        workers = self.alive_roles(self.worker_roles())
        if workers:
            logger.warning("ending {} before fleetd exits", workers)
        killed = self._end(workers, max(timeout * 0.8, timeout - 2.0))
        rest = self.alive_roles()
        if rest:
            logger.warning("ending {} before fleetd exits", rest)
        return killed + self._end(rest, min(timeout * 0.2, 2.0))

    def _end(self, roles: list[str], timeout: float) -> list[str]:
        self.signal(roles, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive_roles(roles) and time.monotonic() < deadline:
            time.sleep(END_POLL_SECONDS)
        left = self.alive_roles(roles)
        self.signal(left, signal.SIGKILL)
        for role in left:
            process = self.children[role].process
            if process is not None:
                process.join(KILLED_JOIN_SECONDS)
        return left

    def stop_helpers(self, timeout: float = HELPER_STOP_SECONDS) -> None:
        """End multiprocessing's fork server and resource tracker before fleetd exits.

        They would exit on their own once they notice we are gone, but a moment later;
        ending them here means nothing of fleetd outlives its main process. Their `_stop`
        closes our end of their pipe and waits for them without a bound (the fork server
        lives on while any child holds that pipe), so one that has not exited within
        `timeout` is killed: fleetd's exit never waits forever.
        """
        fork_server, tracker = self._helpers()
        for helper, pid in (
            (fork_server, getattr(fork_server, "_forkserver_pid", None)),
            (tracker, getattr(tracker, "_pid", None)),
        ):
            stop = getattr(helper, "_stop", None)
            if stop is None or not pid:
                continue
            killer = threading.Timer(timeout, _kill_helper, (pid,))
            killer.start()
            try:
                with contextlib.suppress(OSError, ChildProcessError):
                    stop()
            finally:
                killer.cancel()


def _kill_helper(pid: int) -> None:
    logger.warning("multiprocessing helper (pid {}) did not exit in time; killing it", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
