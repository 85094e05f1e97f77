"""The supervisor's logic, socket-free: control requests, answers, child exits and `now` in;
messages to control clients, the broker and the recorder out.

It routes `fleetctl`'s requests (most to the broker, events to the recorder, status and
stop/drain itself), restarts children that die, runs workspace garbage collection off the
loop, and walks through stop and drain (`fleetd.supervisor.shutdown`). Its process module
(`fleetd.supervisor.process`) owns the sockets, the signals and the children's sentinels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Protocol

import msgspec
from loguru import logger

from fleetd.agents import installed_agents, unknown_agent
from fleetd.agents.claude_home import MISSING_CREDENTIAL as MISSING_CLAUDE_CREDENTIAL
from fleetd.agents.claude_home import find_credential as find_claude_credential
from fleetd.agents.codex_home import MISSING_CREDENTIAL, find_credential
from fleetd.runtime.agent_registry import AgentRegistry
from fleetd.runtime.background import Job
from fleetd.supervisor.children import Child, CrashLoop
from fleetd.supervisor.diffs import diff_reply
from fleetd.supervisor.forwarding import Forwarder, Outgoing, Peer, Then
from fleetd.supervisor.shutdown import ChildSet, Phase, Shutdown
from fleetd.workspace.gc import WorkspaceCollector
from shared import messages as m
from shared.config import FleetConfig
from shared.errors import ConfigError
from shared.models import ProcessView
from shared.namespaces import pid_namespace

RETENTION_CHECK_SECONDS = 600.0
CALM_CHECK_SECONDS = 1.0


class Children(ChildSet, Protocol):
    """What the supervisor needs of its children (`fleetd.supervisor.children.Children`)."""

    def on_exit(self, child: Child, now: float) -> int | None: ...
    def restart_due(self, now: float) -> list[Child]: ...
    def calm(self, now: float) -> None: ...
    def views(self) -> list[ProcessView]: ...


class Systemd(Protocol):
    """What the supervisor tells systemd (`fleetd.supervisor.systemd.Notifier`)."""

    watchdog_interval: float | None

    def ready(self, status: str) -> None: ...
    def status(self, status: str) -> None: ...
    def stopping(self, status: str) -> None: ...
    def watchdog(self) -> None: ...


class Supervisor:
    """fleetd's main state machine; every input returns what is to be sent."""

    def __init__(
        self,
        config: FleetConfig,
        env: Mapping[str, str],
        children: Children,
        notifier: Systemd,
        gc_job: Job,
        pid: int | None = None,
        socket_activated: bool = False,
        reload: Callable[[], FleetConfig] | None = None,
    ) -> None:
        self.config = config
        self.env = env
        self.paths = config.paths()
        self.children = children
        self.notifier = notifier
        self.gc = WorkspaceCollector(config, env)
        self.gc_job = gc_job
        self.gc_client: bytes | None = None
        self.pid = pid if pid is not None else os.getpid()
        self.socket_activated = socket_activated
        self.reload = reload
        registry = AgentRegistry(self.paths.agents_dir)
        self.shutdown = Shutdown(
            config.supervisor.stop_timeout, children, notifier, registry.end_leftovers
        )
        self.forwards = Forwarder()
        # The adapters the workers can load (they read the same entry points when they start).
        self.agents = sorted(installed_agents())
        self.started = 0.0
        self.ready = False
        self.exit_code = 0
        self.warnings: list[str] = []
        self.web_url: str | None = None  # the dashboard's, once its socket is bound
        self.next_retention = self.next_watchdog = self.next_calm = 0.0
        self._out: list[Outgoing] = []

    @property
    def done(self) -> bool:
        return self.shutdown.phase is Phase.DONE

    # --- in ----------------------------------------------------------------------------------

    def start(self, now: float) -> list[Outgoing]:
        """The children are started: READY for systemd once the broker answers."""
        self.started = now
        self.next_retention = now + RETENTION_CHECK_SECONDS
        if not self.codex_credential():
            logger.warning("{}", MISSING_CREDENTIAL)
        self._ask_broker(m.GetCounts(), None, self._on_first_counts, now)
        return self._take()

    def on_request(self, client: bytes, request: m.Message, now: float) -> list[Outgoing]:
        """A control request from `client`."""
        match request:
            case m.Enqueue(tasks=tasks) if any(t.agent not in self.agents for t in tasks):
                name = next(t.agent for t in tasks if t.agent not in self.agents)
                problem = unknown_agent(name, self.agents)
                self._reply(client, m.ErrorReply(code="bad_request", message=problem))
            case m.Enqueue(tasks=tasks) if any(t.agent == "codex" for t in tasks) and (
                not self.codex_credential()
            ):
                self._reply(client, m.ErrorReply(code="unavailable", message=MISSING_CREDENTIAL))
            case m.Enqueue(tasks=tasks) if any(t.agent == "claude" for t in tasks) and (
                find_claude_credential(self.env, self.config.worker.env_allow) is None
            ):
                refusal = m.ErrorReply(code="unavailable", message=MISSING_CLAUDE_CREDENTIAL)
                self._reply(client, refusal)
            case (
                m.Enqueue()
                | m.ListTasks()
                | m.ShowTask()
                | m.CancelTask()
                | m.RetryTask()
                | m.ListWorkers()
                | m.SayToTask()
                | m.InterruptTask()
                | m.SetPriority()
                | m.GetUsage()
                | m.FindTasks()
            ):
                self._ask_broker(request, client, None, now)
            case m.GetRunTotals():
                self._ask_broker(request, client, None, now)
            case m.GetEvents() | m.CountEvents():
                self._out.append(self.forwards.ask(Peer.RECORDER, request, client, None, now))
            case m.GetDiff():
                then: Then = lambda reply, now: diff_reply(request, reply)  # noqa: E731
                self._ask_broker(m.ShowTask(task=request.task), client, then, now)
            case m.CollectWorkspaces():
                self._collect_workspaces(client, request, now)
            case m.GetStatus():
                self._ask_broker(m.GetCounts(), client, self._status_from_counts, now)
            case m.Reload():
                self._reload(client, now)
            case m.Drain():
                self._to_broker(self.shutdown.drain(), now)
                self._reply(client, m.Accepted(detail=f"draining; pid {self.pid}"))
            case m.Stop(timeout=timeout):
                self._to_broker(self.shutdown.stop(timeout, "stop request", now), now)
                self._reply(client, m.Accepted(detail=f"stopping; pid {self.pid}"))
            case _:
                message = f"fleetd does not serve {type(request).__name__}"
                self._reply(client, m.ErrorReply(code="bad_request", message=message))
        return self._take()

    def refuse(self, client: bytes, text: str) -> list[Outgoing]:
        """A control request that could not be read gets a typed error, never silence."""
        return [Outgoing(Peer.CLIENT, client, m.ErrorReply(code="bad_request", message=text))]

    def on_answer(self, ref: bytes, answer: m.Message | None, now: float) -> list[Outgoing]:
        """The broker or the recorder answered request `ref` (None: undecodable)."""
        if answer is None:
            self._out += self.forwards.undecodable(ref, now)
        else:
            self._out += self.forwards.answer(ref, answer, now)
        return self._take()

    def undeliverable(self, outgoing: Outgoing) -> list[Outgoing]:
        """A request the broker or the recorder could not take now."""
        return self.forwards.undeliverable(outgoing.ident)

    def on_signal(self, signum: str, now: float) -> list[Outgoing]:
        """SIGTERM or SIGINT: stop."""
        self._to_broker(self.shutdown.stop(None, f"signal {signum}", now), now)
        return self._take()

    def on_reload(self, now: float) -> list[Outgoing]:
        """SIGHUP: read the config again, as `fleetctl reload` does."""
        self._reload(None, now)
        return self._take()

    def _reload(self, client: bytes | None, now: float) -> None:
        """The broker takes the config's limits and budgets anew."""
        try:
            if self.reload is None:
                raise ConfigError("this fleetd was started without a config to read again")
            config = self.reload()
        except ConfigError as exc:
            logger.error("reload refused: {}", exc)
            if client is not None:
                self._reply(client, m.ErrorReply(code="conflict", message=f"{exc}"))
            return
        schedule = m.SetSchedule(
            limits=dict(config.limits), budget=msgspec.to_builtins(config.budget)
        )
        logger.info("config reloaded: limits and budgets sent to the broker")
        self._ask_broker(schedule, client, _reloaded, now)

    def on_child_exit(self, child: Child, now: float) -> list[Outgoing]:
        try:
            code = self.children.on_exit(child, now)
        except CrashLoop as exc:
            logger.error("{}", exc)
            self.warnings.append(str(exc))
            if not child.essential:
                return self._take()
            self.exit_code = 1
            self._to_broker(self.shutdown.stop(None, "crash loop", now), now)
            return self._take()
        if child.restartable:
            logger.warning(
                "{} (pid {}) exited with code {}; restarting", child.role, child.pid, code
            )
        else:
            logger.info("{} exited with code {}", child.role, code)
        if child.worker is not None:
            reason = f"worker process died (exit code {code})"
            self._ask_broker(m.WorkerGone(worker=child.worker, reason=reason), None, None, now)
        return self._take()

    def on_gc_done(self, now: float) -> list[Outgoing]:
        """The helper thread finished removing worktrees: answer whoever asked."""
        future = self.gc_job.take()
        if future is None:
            return []
        try:
            reply: m.Message = future.result()
        except Exception:
            logger.exception("workspace gc failed")
            reply = m.ErrorReply(code="internal", message="workspace gc failed; see the fleetd log")
        if self.gc_client is not None:
            self._reply(self.gc_client, reply)
        self.gc_client = None
        return self._take()

    def step(self, now: float) -> list[Outgoing]:
        """Timers: restarts, late answers, retention gc, the watchdog, drain polls, stop."""
        if self.shutdown.phase in (Phase.RUNNING, Phase.DRAINING):
            for child in self.children.restart_due(now):
                logger.info("restarted {} (pid {})", child.role, child.pid)
        self._out += self.forwards.expire(now)
        if now >= self.next_retention and self.shutdown.phase is Phase.RUNNING:
            self.next_retention = now + RETENTION_CHECK_SECONDS
            hours = self.config.workspace.retention_hours
            self._collect_workspaces(None, m.CollectWorkspaces(older_than_hours=hours), now)
        if now >= self.next_calm:
            self.next_calm = now + CALM_CHECK_SECONDS
            self.children.calm(now)
        interval = self.notifier.watchdog_interval
        if interval and now >= self.next_watchdog:
            self.next_watchdog = now + interval
            self.notifier.watchdog()
        if self.shutdown.drain_poll_due(now):
            self._ask_broker(m.GetCounts(), None, self._on_drain_counts, now)
        self._to_broker(self.shutdown.advance(now), now)
        return self._take()

    # --- answers -----------------------------------------------------------------------------

    def codex_credential(self) -> bool:
        """Whether a Codex run would find a credential; the warning follows the answer."""
        found = find_credential(
            self.env, self.config.worker.env_allow, self.config.codex.provider_env_key
        )
        if found is None and MISSING_CREDENTIAL not in self.warnings:
            self.warnings.append(MISSING_CREDENTIAL)
        elif found is not None and MISSING_CREDENTIAL in self.warnings:
            self.warnings.remove(MISSING_CREDENTIAL)  # e.g. `codex login` since start
        return found is not None

    def _status_from_counts(self, reply: m.Message, now: float) -> m.Message:
        if not isinstance(reply, m.QueueCounts):
            return reply
        return m.Status(
            pid=self.pid,
            uptime_s=round(now - self.started, 3),
            state_dir=str(self.paths.root),
            dispatching=reply.dispatching,
            stopping=self.shutdown.stopping,
            counts=reply.counts,
            processes=self.children.views(),
            workers=reply.workers,
            other_workers=reply.other_workers,
            feed=self.paths.feed_endpoint,
            warnings=list(self.warnings),
            socket_activated=self.socket_activated,
            pid_namespace=pid_namespace(),
            web_url=self.web_url,
            schedule=reply.schedule,
        )

    def _on_first_counts(self, reply: m.Message, now: float) -> None:
        if isinstance(reply, m.QueueCounts) and not self.ready:
            self.ready = True
            self.notifier.ready(f"running {self.config.workers} workers")

    def _on_drain_counts(self, reply: m.Message, now: float) -> None:
        if isinstance(reply, m.QueueCounts):
            self._to_broker(self.shutdown.on_counts(reply, now), now)

    def _collect_workspaces(
        self, client: bytes | None, request: m.CollectWorkspaces, now: float
    ) -> None:
        """Ask the broker for finished tasks, then remove their worktrees off the loop."""

        def remove_finished(reply: m.Message, now: float) -> m.Message | None:
            if not isinstance(reply, m.TaskList):
                return reply
            # Checked here, not before asking: two requests may both be waiting on the broker.
            if self.gc_job.busy:
                return m.ErrorReply(code="conflict", message="a gc is running; try again shortly")
            eligible = self.gc.eligible(reply.tasks, request.older_than_hours)
            self.gc_job.submit(self.gc.remove, eligible)
            self.gc_client = client
            return None  # answered when the removal ends

        self._ask_broker(m.ListTasks(limit=self.gc.TASK_LIMIT), client, remove_finished, now)

    # --- out ---------------------------------------------------------------------------------

    def _ask_broker(
        self, request: m.Message, client: bytes | None, then: Then | None, now: float
    ) -> None:
        self._out.append(self.forwards.ask(Peer.BROKER, request, client, then, now))

    def _to_broker(self, requests: list[m.Message], now: float) -> None:
        for request in requests:
            self._ask_broker(request, None, None, now)

    def _reply(self, client: bytes, message: m.Message) -> None:
        self._out.append(Outgoing(Peer.CLIENT, client, message))

    def _take(self) -> list[Outgoing]:
        out, self._out = self._out, []
        return out


def _reloaded(answer: m.Message, now: float) -> m.Message:
    if isinstance(answer, m.Accepted):
        return m.Accepted(
            detail="reloaded [limits] and the fleet budgets; other settings take a restart"
        )
    return answer
