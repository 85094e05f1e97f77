"""The supervisor process (`fleetd`): its start, its sockets and poll loop around the
`Supervisor` state machine, and its end."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from itertools import islice
from pathlib import Path

import zmq
from loguru import logger

from fleetd.agents.codex_home import PrivateHomes
from fleetd.runtime.agent_registry import AgentRegistry
from fleetd.runtime.background import BackgroundJob
from fleetd.runtime.lifecycle import (
    ShutdownSignal,
    become_subreaper,
    give_back_free_memory,
    set_title,
)
from fleetd.runtime.listen import listener_url, load_token, open_web_listener
from fleetd.runtime.locks import FileLock
from fleetd.runtime.redaction import Redactor, mask_message
from fleetd.runtime.sockets import new_socket, waiting
from fleetd.supervisor.children import Children, Roles
from fleetd.supervisor.control import open_control_socket
from fleetd.supervisor.forwarding import Outgoing, Peer
from fleetd.supervisor.generation import Generation
from fleetd.supervisor.logic import Supervisor
from fleetd.supervisor.reaper import reap_orphans
from fleetd.supervisor.systemd import Notifier
from shared import messages as m
from shared.config import FleetConfig
from shared.errors import StateDirError
from shared.paths import StatePaths

TICK_MS = 200
ORPHAN_SCAN_SECONDS = 1.0
RECV_BATCH = 1000
HWM = 10_000


def run(
    config: FleetConfig,
    env: Mapping[str, str],
    roles: Roles,
    reload: Callable[[], FleetConfig] | None = None,
) -> int:
    """Run fleetd in the foreground until stopped; the process exit code."""
    paths = config.paths()
    paths.check_socket_paths()
    paths.create()
    state_lock = hold_state_dir(paths)
    set_title("fleetd: supervisor")
    become_subreaper()
    # Before the agents: an earlier fleetd's worker must not outlive its agent and report the
    # agent's death as the task's failure.
    Generation(paths).end_leftovers()
    ended = AgentRegistry(paths.agents_dir).end_leftovers()
    if ended:
        logger.warning("ended {} agent process group(s) left by a previous fleetd", ended)
    PrivateHomes.remove_all_under(paths.codex_homes_dir)
    PrivateHomes.remove_all_under(paths.claude_homes_dir)
    web_listener = open_web_listener(config.web)
    if web_listener is not None:
        load_token(paths.web_token, config.web.token)
    supervision = config.supervisor
    children = Children(
        supervision.restart_backoff_max,
        supervision.crash_loop_restarts,
        supervision.crash_loop_window,
    )
    children.define(config, roles, web_listener)
    # Children are forked before any socket or database exists in this process.
    children.start_all()
    notifier = Notifier(env)
    gc_job = BackgroundJob("workspace-gc")
    sockets = Sockets(zmq.Context(), paths, env, Redactor(config.worker.secret_values(env)))
    supervisor = Supervisor(
        config, env, children, notifier, gc_job, socket_activated=sockets.adopted, reload=reload
    )
    supervisor.web_url = listener_url(web_listener) if web_listener is not None else None
    try:
        logger.info(
            "fleetd {} started: {} workers, state {}, control {}, dashboard {}",
            os.getpid(),
            config.workers,
            paths.root,
            sockets.control_path,
            supervisor.web_url or "off",
        )
        signals = ShutdownSignal((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        _loop(supervisor, children, sockets, signals)
        return supervisor.exit_code
    except Exception:
        logger.exception("the supervisor's loop failed; ending every process of the fleet")
        return 1
    finally:
        # Bounded, each of them: after a failed loop too, fleetd exits and nothing outlives it.
        children.end_all(supervision.stop_timeout)
        supervisor.gc.abort()
        gc_job.close()
        children.stop_helpers()
        reap_orphans(set())
        sockets.close()
        if web_listener is not None:
            web_listener.close()
        notifier.close()
        state_lock.release()
        logger.info("fleetd stopped")


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


class Sockets:
    """The control socket (clients) and the supervisor's two DEALERs (broker, recorder)."""

    def __init__(
        self, context: zmq.Context, paths: StatePaths, env: Mapping[str, str], redactor: Redactor
    ) -> None:
        self.context = context
        # Replies carry task specs and errors built from them: masked like agent output.
        self.redactor = redactor
        self.control, self.control_path, self.adopted = open_control_socket(
            context, paths.control_socket, env
        )
        self.broker = self._dealer(paths.broker_endpoint)
        self.recorder = self._dealer(paths.recorder_endpoint)

    def _dealer(self, endpoint: str) -> zmq.Socket:
        sock = new_socket(self.context, zmq.DEALER, linger_ms=0, hwm=HWM, identity=b"supervisor")
        sock.connect(endpoint)
        return sock

    def send(self, supervisor: Supervisor, out: list[Outgoing]) -> None:
        """Send without blocking; a request a child cannot take now fails its client at once."""
        for item in out:
            if item.to is Peer.CLIENT:
                with contextlib.suppress(zmq.ZMQError):  # the client went away
                    self.control.send_multipart(
                        [item.ident, self._encode_reply(item.message)], zmq.NOBLOCK
                    )
                continue
            sock, codec = (
                (self.broker, m.BROKER_REQUESTS)
                if item.to is Peer.BROKER
                else (self.recorder, m.RECORDER_REQUESTS)
            )
            try:
                sock.send_multipart([item.ident, codec.encode(item.message)], zmq.NOBLOCK)
            except zmq.Again:
                self.send(supervisor, supervisor.undeliverable(item))

    def _encode_reply(self, message: m.Message) -> bytes:
        return m.CONTROL_REPLIES.encode(mask_message(message, self.redactor))

    def close(self) -> None:
        self.context.destroy(linger=0)
        if not self.adopted:
            with contextlib.suppress(OSError):
                Path(self.control_path).unlink()


def _loop(
    supervisor: Supervisor, children: Children, sockets: Sockets, shutdown: ShutdownSignal
) -> None:
    poller = zmq.Poller()
    for sock in (sockets.control, sockets.broker, sockets.recorder):
        poller.register(sock, zmq.POLLIN)
    poller.register(shutdown.fd, zmq.POLLIN)
    poller.register(supervisor.gc_job.fd, zmq.POLLIN)
    sockets.send(supervisor, supervisor.start(time.monotonic()))
    registered: set[int] = set()
    next_orphan_scan = 0.0
    while not supervisor.done:
        sentinels = children.sentinels()
        if sentinels.keys() != registered:
            for fd in registered - sentinels.keys():
                poller.unregister(fd)
            for fd in sentinels.keys() - registered:
                poller.register(fd, zmq.POLLIN)
            registered = set(sentinels)
        events = dict(poller.poll(TICK_MS))
        now = time.monotonic()
        out: list[Outgoing] = []
        if shutdown.fd in events:
            shutdown.drain()
            if shutdown.hangups:
                shutdown.hangups = 0  # a hang-up reloads the config; it does not stop
                out += supervisor.on_reload(now)
            if shutdown.received is not None:
                out += supervisor.on_signal(str(shutdown.received), now)
        # A snapshot: collecting an exit takes the child out of the watched sentinels.
        for child in [sentinels[fd] for fd in events if fd in sentinels]:
            out += supervisor.on_child_exit(child, now)
            reap_orphans(children.managed_pids())
        if sockets.control in events:
            out += _control_requests(supervisor, sockets.control, now)
        if sockets.broker in events:
            out += _answers(supervisor, sockets.broker, m.BROKER_REPLIES, now)
        if sockets.recorder in events:
            out += _answers(supervisor, sockets.recorder, m.RECORDER_REPLIES, now)
        if supervisor.gc_job.fd in events:
            out += supervisor.on_gc_done(now)
        if now >= next_orphan_scan:
            next_orphan_scan = now + ORPHAN_SCAN_SECONDS
            reap_orphans(children.managed_pids())
            give_back_free_memory()
        out += supervisor.step(now)
        sockets.send(supervisor, out)


def _control_requests(supervisor: Supervisor, control: zmq.Socket, now: float) -> list[Outgoing]:
    out: list[Outgoing] = []
    for frames in islice(waiting(control), RECV_BATCH):
        client = frames[0]
        if len(frames) != 2:
            out += supervisor.refuse(client, "expected 1 frame")
            continue
        try:
            request = m.CONTROL_REQUESTS.decode(frames[1])
        except Exception as exc:  # any undecodable input gets a typed error reply
            out += supervisor.refuse(client, f"malformed request: {exc}"[:500])
            continue
        out += supervisor.on_request(client, request, now)
    return out


def _answers(
    supervisor: Supervisor, sock: zmq.Socket, codec: m.Codec, now: float
) -> list[Outgoing]:
    out: list[Outgoing] = []
    for frames in islice(waiting(sock), RECV_BATCH):
        if len(frames) != 2:
            continue
        try:
            answer: m.Message | None = codec.decode(frames[1])
        except Exception:
            answer = None
        out += supervisor.on_answer(frames[0], answer, now)
    return out
