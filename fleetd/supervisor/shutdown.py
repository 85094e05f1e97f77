"""The supervisor's stop and drain, as a state machine: `now` in, requests to the broker out.

    RUNNING --drain--> DRAINING (no new tasks; polls the broker until nothing runs)
    RUNNING or DRAINING --stop--> STOPPING (workers SIGTERMed: they end their agents and report
        their tasks interrupted; past the stop deadline they are SIGKILLed, their agents ended,
        their executions reported lost)
    STOPPING --no worker left--> CLOSING (recorder and broker SIGTERMed; SIGKILLed past the
        close deadline) --nothing left--> DONE

The stop deadline leaves part of the bound (at least a fifth, up to two seconds) for closing.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Callable
from typing import Protocol

from loguru import logger

from shared import messages as m

DRAIN_POLL_SECONDS = 0.2
CLOSE_GRACE_SECONDS = 1.0  # the least time the recorder and broker get to store what they hold


class Phase(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"
    CLOSING = "closing"
    DONE = "done"


class ChildSet(Protocol):
    """What shutdown needs of the supervisor's children (`Children`)."""

    def signal(self, roles: list[str], sig: int) -> None: ...
    def alive_roles(self, roles: list[str] | None = None) -> list[str]: ...
    def worker_roles(self) -> list[str]: ...
    def worker_of(self, role: str) -> str | None: ...


class Notifier(Protocol):
    """What shutdown tells systemd (`fleetd.supervisor.systemd.Notifier`)."""

    def status(self, status: str) -> None: ...
    def stopping(self, status: str) -> None: ...


class Shutdown:
    """Where the supervisor is between running and exiting, and what is due next."""

    def __init__(
        self,
        stop_timeout: float,
        children: ChildSet,
        notifier: Notifier,
        end_leftover_agents: Callable[[], int],
    ) -> None:
        self.stop_timeout = stop_timeout
        self.children = children
        self.notifier = notifier
        self.end_leftover_agents = end_leftover_agents
        self.phase = Phase.RUNNING
        self.stop_deadline = float("inf")
        self.close_deadline = float("inf")
        self.next_drain_poll = 0.0

    @property
    def stopping(self) -> str | None:
        """The phase, for `fleetctl status`, once it is no longer running."""
        return None if self.phase is Phase.RUNNING else self.phase.value

    def drain(self) -> list[m.Message]:
        """Stop dispatching; exit once no task runs."""
        if self.phase is not Phase.RUNNING:
            return []
        logger.info("draining: no new tasks start; exiting when running tasks finish")
        self.phase = Phase.DRAINING
        self.notifier.status("draining")
        return [m.SetDispatch(dispatching=False)]

    def on_counts(self, counts: m.QueueCounts, now: float) -> list[m.Message]:
        """The broker's answer to a drain poll: nothing running means drained."""
        if self.phase is not Phase.DRAINING:
            return []
        busy = [w for w in counts.workers if w.state == "busy"]
        if counts.counts.get("running", 0) == 0 and not busy:
            return self.stop(None, "drained", now)
        return []

    def stop(self, timeout: float | None, why: str, now: float) -> list[m.Message]:
        """Stop dispatching, SIGTERM the workers (they end their agents and report back)."""
        if self.phase in (Phase.STOPPING, Phase.CLOSING, Phase.DONE):
            return []
        bound = timeout if timeout is not None else self.stop_timeout
        self.close_deadline = now + bound
        self.stop_deadline = now + max(bound * 0.8, bound - 2.0)
        logger.info("stopping ({}): ending running agents, bounded by {:g} s", why, bound)
        self.phase = Phase.STOPPING
        self.notifier.stopping(f"stopping ({why})")
        self.children.signal(self.children.worker_roles(), signal.SIGTERM)
        return [m.SetDispatch(dispatching=False)]

    def drain_poll_due(self, now: float) -> bool:
        """Whether to ask the broker for counts now (every DRAIN_POLL_SECONDS while draining)."""
        if self.phase is not Phase.DRAINING or now < self.next_drain_poll:
            return False
        self.next_drain_poll = now + DRAIN_POLL_SECONDS
        return True

    def advance(self, now: float) -> list[m.Message]:
        """Move on when the children of this phase are gone, or force them past its deadline."""
        if self.phase is Phase.STOPPING:
            return self._stopping(now)
        if self.phase is Phase.CLOSING:
            alive = self.children.alive_roles()
            if alive and now >= self.close_deadline:
                logger.warning("{} did not exit in time; killing", alive)
                self.children.signal(alive, signal.SIGKILL)
            if not alive:
                self.phase = Phase.DONE
        return []

    def _stopping(self, now: float) -> list[m.Message]:
        alive = self.children.alive_roles(self.children.worker_roles())
        if alive and now >= self.stop_deadline:
            logger.warning("workers {} did not stop in time; killing them", alive)
            self.children.signal(alive, signal.SIGKILL)
            self.end_leftover_agents()
            reason = "fleet stop timed out while this task ran"
            return [
                m.WorkerGone(worker=worker, reason=reason)
                for worker in map(self.children.worker_of, alive)
                if worker is not None
            ]
        if not alive:
            self.phase = Phase.CLOSING
            self.close_deadline = max(self.close_deadline, now + CLOSE_GRACE_SECONDS)
            # Client roles (web, tracker) first: they only talk to the broker and the recorder.
            clients = [r for r in self.children.alive_roles() if r not in ("recorder", "broker")]
            self.children.signal([*clients, "recorder", "broker"], signal.SIGTERM)
        return []
