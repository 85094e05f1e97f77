"""The supervisor (`fleetd`): starts and restarts the children, serves the control socket,
handles signals, stop and drain, and speaks the systemd notify protocol."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import zmq
from loguru import logger

from fleetd.agents.codex_home import MISSING_CREDENTIAL, PrivateHomes, find_credential
from fleetd.broker import process as broker
from fleetd.recorder import logic as recorder
from fleetd.runtime.agent_registry import AgentRegistry
from fleetd.runtime.background import BackgroundJob
from fleetd.runtime.lifecycle import ShutdownSignal, become_subreaper, set_title
from fleetd.runtime.locks import FileLock
from fleetd.supervisor.children import Child, Children, CrashLoop
from fleetd.supervisor.control import open_control_socket
from fleetd.supervisor.forwarding import Forwarder
from fleetd.supervisor.reaper import reap_orphans
from fleetd.supervisor.systemd import Notifier
from fleetd.worker import process as worker_main
from fleetd.workspace.cleanup import WorkspaceCollector, diff_reply
from shared import messages as m
from shared.config import FleetConfig
from shared.errors import StateDirError
from shared.paths import StatePaths

TICK_SECONDS = 0.2
CLOSE_TIMEOUT = 10.0
ORPHAN_SCAN_SECONDS = 1.0
RETENTION_CHECK_SECONDS = 600.0
DRAIN_POLL_SECONDS = 0.2
FORWARDED_TO_BROKER = (m.Enqueue, m.ListTasks, m.ShowTask, m.CancelTask, m.RetryTask, m.ListWorkers)
# Built once: building a codec costs 12-30 us, and every control request used four.
_CONTROL_REQUESTS = m.CONTROL_REQUESTS
_CONTROL_REPLIES = m.CONTROL_REPLIES
_BROKER_REQUESTS = m.BROKER_REQUESTS
_BROKER_REPLIES = m.BROKER_REPLIES
_RECORDER_REQUESTS = m.RECORDER_REQUESTS
_RECORDER_REPLIES = m.RECORDER_REPLIES


def hold_state_dir(paths: StatePaths) -> FileLock:
    """Hold the state directory's lock for our lifetime, or say who holds it."""
    lock = FileLock(paths.lock_file)
    if not lock.acquire(wait=False):
        holder = os.read(lock.fd, 64).decode(errors="replace").strip() or "unknown"
        lock.release()
        raise StateDirError(
            f"another fleetd (pid {holder}) is already running on {paths.root}; "
            "stop it with `fleetctl stop`, or give this one another --state-dir"
        )
    os.ftruncate(lock.fd, 0)
    os.write(lock.fd, f"{os.getpid()}\n".encode())
    return lock


class Supervisor:
    """fleetd's main process."""

    def __init__(self, config: FleetConfig, env: Mapping[str, str]) -> None:
        self.config = config
        self.env = env
        self.paths = config.paths()
        self.notifier = Notifier(env)
        self.started_mono = time.monotonic()
        self.phase = "running"  # running | draining | stopping | closing | done
        self.exit_code = 0
        self.stop_deadline = float("inf")
        self.close_deadline = float("inf")
        self.forwards = Forwarder(self._reply)
        self.ready = False
        self.dispatching = True
        self.warnings: list[str] = []
        self.gc = WorkspaceCollector(config, env)
        self.gc_job = BackgroundJob("workspace-gc")
        self.gc_client: bytes | None = None
        self.children = Children(
            config.supervisor.restart_backoff_max,
            config.supervisor.crash_loop_restarts,
            config.supervisor.crash_loop_window,
        )

    # --- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Everything before the loop. Children are forked before any socket or database."""
        self.paths.check_socket_paths()
        self.paths.create()
        self.state_lock = hold_state_dir(self.paths)
        set_title("fleetd: supervisor")
        become_subreaper()
        ended = AgentRegistry(self.paths.agents_dir).end_leftovers()
        if ended:
            logger.warning("ended {} agent process group(s) left by a previous fleetd", ended)
        PrivateHomes.remove_all_under(self.paths.codex_homes_dir)
        if not self._codex_credential():
            logger.warning("{}", MISSING_CREDENTIAL)
        self._define_children()
        self.children.start_all()
        self.context = zmq.Context()
        self.control, self.control_path, self.adopted = open_control_socket(
            self.context, self.paths.control_socket, self.env
        )
        self.broker = self._dealer(self.paths.broker_endpoint)
        self.recorder = self._dealer(self.paths.recorder_endpoint)
        self.shutdown = ShutdownSignal((signal.SIGTERM, signal.SIGINT))
        self._ask_broker(m.GetCounts(), None, self._on_first_counts)
        logger.info(
            "fleetd {} started: {} workers, state {}, control {}",
            os.getpid(),
            self.config.workers,
            self.paths.root,
            self.control_path,
        )

    def _define_children(self) -> None:
        config = self.config
        self.children.preload(
            ["fleetd.broker.process", "fleetd.recorder.logic", "fleetd.worker.process"]
        )
        self.children.add(Child("broker", broker.run, lambda first: (config, first)))
        self.children.add(Child("recorder", recorder.run, lambda first: (config,)))
        for index in range(1, config.workers + 1):
            self.children.add(
                Child(f"worker {index}", worker_main.run, lambda first, i=index: (config, i))
            )

    def _dealer(self, endpoint: str) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, b"supervisor")
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        sock.connect(endpoint)
        return sock

    # --- loop --------------------------------------------------------------------------------

    def loop(self) -> int:
        poller = zmq.Poller()
        for sock in (self.control, self.broker, self.recorder):
            poller.register(sock, zmq.POLLIN)
        poller.register(self.shutdown.fd, zmq.POLLIN)
        poller.register(self.gc_job.fd, zmq.POLLIN)
        registered: set[int] = set()
        next_orphan_scan = next_watchdog = next_drain_poll = 0.0
        next_retention = time.monotonic() + RETENTION_CHECK_SECONDS
        while self.phase != "done":
            sentinels = self.children.sentinels()
            for fd in registered - sentinels.keys():
                poller.unregister(fd)
            for fd in sentinels.keys() - registered:
                poller.register(fd, zmq.POLLIN)
            registered = set(sentinels)
            events = dict(poller.poll(TICK_SECONDS * 1000))
            now = time.monotonic()
            if self.shutdown.fd in events:
                self.shutdown.drain()
                self.begin_stop(None, f"signal {self.shutdown.received}")
            for fd, child in sentinels.items():
                if fd in events:
                    self._on_child_exit(child, now)
            if self.control in events:
                self._serve_control()
            if self.broker in events:
                self.forwards.on_replies(self.broker, _BROKER_REPLIES)
            if self.recorder in events:
                self.forwards.on_replies(self.recorder, _RECORDER_REPLIES)
            if self.gc_job.fd in events:
                self._on_workspaces_collected()
            if now >= next_retention and self.phase == "running":
                next_retention = now + RETENTION_CHECK_SECONDS
                hours = self.config.workspace.retention_hours
                self._collect_workspaces(None, m.CollectWorkspaces(older_than_hours=hours))
            self._restart_due(now)
            self.forwards.expire(now)
            if now >= next_orphan_scan:
                next_orphan_scan = now + ORPHAN_SCAN_SECONDS
                reap_orphans(self.children.managed_pids())
                self.children.calm(now)
            if self.notifier.watchdog_interval and now >= next_watchdog:
                next_watchdog = now + self.notifier.watchdog_interval
                self.notifier.watchdog()
            if self.phase == "draining" and now >= next_drain_poll:
                next_drain_poll = now + DRAIN_POLL_SECONDS
                self._ask_broker(m.GetCounts(), None, self._on_drain_counts)
            self._advance_stop(now)
        return self.exit_code

    def _on_child_exit(self, child: Child, now: float) -> None:
        try:
            code = self.children.on_exit(child, now)
        except CrashLoop as exc:
            logger.error("{}", exc)
            self.warnings.append(str(exc))
            self.exit_code = 1
            self.begin_stop(None, "crash loop")
            return
        if child.restartable:
            logger.warning(
                "{} (pid {}) exited with code {}; restarting", child.role, child.pid, code
            )
        else:
            logger.info("{} exited with code {}", child.role, code)
        if child.role.startswith("worker "):
            worker_id = "w" + child.role.split()[1]
            reason = f"worker process died (exit code {code})"
            self._ask_broker(m.WorkerGone(worker=worker_id, reason=reason), None, None)
        reap_orphans(self.children.managed_pids())

    def _restart_due(self, now: float) -> None:
        if self.phase in ("running", "draining"):
            for child in self.children.restart_due(now):
                logger.info("restarted {} (pid {})", child.role, child.pid)

    # --- control requests ----------------------------------------------------------------------

    def _serve_control(self) -> None:
        codec = _CONTROL_REQUESTS
        for _ in range(1000):
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            client = frames[0]
            if len(frames) != 2:
                self._reply(client, m.ErrorReply(code="bad_request", message="expected 1 frame"))
                continue
            try:
                request = codec.decode(frames[1])
            except Exception as exc:  # any undecodable input gets a typed error reply
                message = f"malformed request: {exc}"[:500]
                self._reply(client, m.ErrorReply(code="bad_request", message=message))
                continue
            self._dispatch(client, request)

    def _codex_credential(self) -> bool:
        """Whether a Codex run would find a credential; the warning follows the answer."""
        found = find_credential(
            self.env, self.config.worker.env_allow, self.config.codex.provider_env_key
        )
        if found is None and MISSING_CREDENTIAL not in self.warnings:
            self.warnings.append(MISSING_CREDENTIAL)
        elif found is not None and MISSING_CREDENTIAL in self.warnings:
            self.warnings.remove(MISSING_CREDENTIAL)  # e.g. `codex login` since start
        return found is not None

    def _dispatch(self, client: bytes, request: m.Message) -> None:
        match request:
            case m.Enqueue(tasks=tasks) if any(t.agent == "codex" for t in tasks) and (
                not self._codex_credential()
            ):
                self._reply(client, m.ErrorReply(code="unavailable", message=MISSING_CREDENTIAL))
            case m.Enqueue() | m.ListTasks() | m.ShowTask() | m.CancelTask() | m.ListWorkers():
                self._ask_broker(request, client, None)
            case m.RetryTask():
                self._ask_broker(request, client, None)
            case m.GetEvents():
                self.forwards.ask(self.recorder, _RECORDER_REQUESTS, request, client, None)
            case m.GetDiff():
                self._ask_broker(
                    m.ShowTask(task=request.task), client, lambda reply: diff_reply(request, reply)
                )
            case m.CollectWorkspaces():
                self._collect_workspaces(client, request)
            case m.GetStatus():
                self._ask_broker(m.GetCounts(), client, self._status_from_counts)
            case m.Drain():
                self.begin_drain()
                self._reply(client, m.Accepted(detail=f"draining; pid {os.getpid()}"))
            case m.Stop(timeout=timeout):
                self.begin_stop(timeout, "stop request")
                self._reply(client, m.Accepted(detail=f"stopping; pid {os.getpid()}"))

    def _reply(self, client: bytes, message: m.Message) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.control.send_multipart([client, _CONTROL_REPLIES.encode(message)], zmq.NOBLOCK)

    def _ask_broker(
        self,
        request: m.Message,
        client: bytes | None,
        then: Callable[[m.Message], m.Message | None] | None,
    ) -> None:
        self.forwards.ask(self.broker, _BROKER_REQUESTS, request, client, then)

    # --- workspace garbage collection ------------------------------------------------------

    def _collect_workspaces(self, client: bytes | None, request: m.CollectWorkspaces) -> None:
        """Ask the broker for finished tasks, then remove their worktrees off the loop."""

        def remove_finished(reply: m.Message) -> m.Message | None:
            if not isinstance(reply, m.TaskList):
                return reply
            # Checked here, not before asking: two requests may both be waiting on the broker.
            if self.gc_job.busy:
                return m.ErrorReply(code="conflict", message="a gc is running; try again shortly")
            self.gc_client = client
            self.gc_job.submit(
                self.gc.remove, self.gc.eligible(reply.tasks, request.older_than_hours)
            )
            return None  # answered when the removal ends

        self._ask_broker(m.ListTasks(limit=self.gc.TASK_LIMIT), client, remove_finished)

    def _on_workspaces_collected(self) -> None:
        future = self.gc_job.take()
        if future is None:
            return
        try:
            reply: m.Message = future.result()
        except Exception:
            logger.exception("workspace gc failed")
            reply = m.ErrorReply(code="internal", message="workspace gc failed; see the fleetd log")
        if self.gc_client is not None:
            self._reply(self.gc_client, reply)
        self.gc_client = None

    def _status_from_counts(self, reply: m.Message) -> m.Message:
        if not isinstance(reply, m.QueueCounts):
            return reply
        self.dispatching = reply.dispatching
        return m.Status(
            pid=os.getpid(),
            uptime_s=round(time.monotonic() - self.started_mono, 3),
            state_dir=str(self.paths.root),
            dispatching=reply.dispatching,
            stopping=None if self.phase == "running" else self.phase,
            counts=reply.counts,
            processes=self.children.views(),
            workers=reply.workers,
            feed=self.paths.feed_endpoint,
            warnings=list(self.warnings),
        )

    def _on_first_counts(self, reply: m.Message) -> None:
        if isinstance(reply, m.QueueCounts) and not self.ready:
            self.ready = True
            self.notifier.ready(f"running {self.config.workers} workers")
        return None

    # --- stop and drain ----------------------------------------------------------------------

    def begin_drain(self) -> None:
        if self.phase != "running":
            return
        logger.info("draining: no new tasks start; exiting when running tasks finish")
        self.phase = "draining"
        self.notifier.status("draining")
        self._ask_broker(m.SetDispatch(dispatching=False), None, None)

    def _on_drain_counts(self, reply: m.Message) -> None:
        if self.phase != "draining" or not isinstance(reply, m.QueueCounts):
            return None
        busy = [w for w in reply.workers if w.state == "busy"]
        if reply.counts.get("running", 0) == 0 and not busy:
            self.begin_stop(None, "drained")
        return None

    def begin_stop(self, timeout: float | None, why: str) -> None:
        """Stop dispatching, SIGTERM the workers (they end their agents and report back)."""
        if self.phase in ("stopping", "closing", "done"):
            return
        bound = timeout if timeout is not None else self.config.supervisor.stop_timeout
        now = time.monotonic()
        self.close_deadline = now + bound
        self.stop_deadline = now + max(bound * 0.8, bound - 2.0)
        logger.info("stopping ({}): ending running agents, bounded by {:g} s", why, bound)
        self.phase = "stopping"
        self.notifier.stopping(f"stopping ({why})")
        self._ask_broker(m.SetDispatch(dispatching=False), None, None)
        self.children.signal(self._worker_roles(), signal.SIGTERM)

    def _worker_roles(self) -> list[str]:
        return [role for role in self.children.children if role.startswith("worker ")]

    def _advance_stop(self, now: float) -> None:
        if self.phase == "stopping":
            alive = self.children.alive_roles("worker ")
            if alive and now >= self.stop_deadline:
                logger.warning("workers {} did not stop in time; killing them", alive)
                self.children.signal(alive, signal.SIGKILL)
                AgentRegistry(self.paths.agents_dir).end_leftovers()
                for role in alive:
                    reason = "fleet stop timed out while this task ran"
                    gone = m.WorkerGone(worker="w" + role.split()[1], reason=reason)
                    self._ask_broker(gone, None, None)
                return
            if not alive:
                self.phase = "closing"
                self.close_deadline = max(self.close_deadline, now + 1.0)
                self.children.signal(["recorder", "broker"], signal.SIGTERM)
        elif self.phase == "closing":
            alive = self.children.alive_roles()
            if alive and now >= self.close_deadline:
                logger.warning("{} did not exit in time; killing", alive)
                self.children.signal(alive, signal.SIGKILL)
            if not alive:
                self.phase = "done"

    # --- end ---------------------------------------------------------------------------------

    def close(self) -> None:
        self.gc.abort()
        self.gc_job.close()
        self.children.stop_helpers()
        reap_orphans(set())
        for sock in (self.control, self.broker, self.recorder):
            sock.close(linger=0)
        self.context.term()
        if not self.adopted:
            with contextlib.suppress(OSError):
                Path(self.control_path).unlink()
        self.notifier.close()
        logger.info("fleetd stopped")


def run(config: FleetConfig, env: Mapping[str, str]) -> int:
    """Run fleetd in the foreground until stopped; the process exit code."""
    supervisor = Supervisor(config, env)
    supervisor.start()
    try:
        return supervisor.loop()
    finally:
        supervisor.close()
