"""Stand-ins for the supervisor's children and systemd: what they were told, and who is alive.

The real `Children` forks processes; these record signals and let a test say which child
has exited, so that stop and drain are driven without a process or a sleep.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from fleetd.supervisor.children import Child
from shared.models import ProcessView


class FakeChildren:
    """A broker, a recorder and workers `w1..wN`, all alive until a test ends them."""

    def __init__(self, workers: int = 2, clients: tuple[str, ...] = ()) -> None:
        self.workers = {f"worker {i}": f"w{i}" for i in range(1, workers + 1)}
        self.clients = list(clients)  # roles such as web and the tracker: clients of the others
        self.alive = {"broker", "recorder", *self.workers, *self.clients}
        self.signals: list[tuple[str, int]] = []
        self.restarted: list[str] = []
        self.calmed: list[float] = []

    def signal(self, roles: list[str], sig: int) -> None:
        self.signals += [(role, sig) for role in roles]

    def alive_roles(self, roles: list[str] | None = None) -> list[str]:
        wanted = ["broker", "recorder", *self.workers, *self.clients] if roles is None else roles
        return [role for role in wanted if role in self.alive]

    def worker_roles(self) -> list[str]:
        return list(self.workers)

    def worker_of(self, role: str) -> str | None:
        return self.workers.get(role)

    def exit(self, *roles: str) -> None:
        self.alive -= set(roles)

    def signalled(self, sig: int) -> list[str]:
        return [role for role, sent in self.signals if sent == sig]

    # --- what the supervisor's logic needs besides shutdown --------------------------------

    def on_exit(self, child: Child, now: float) -> int | None:
        self.alive.discard(child.role)
        return 1

    def restart_due(self, now: float) -> list[Child]:
        return []

    def calm(self, now: float) -> None:
        self.calmed.append(now)

    def views(self) -> list[ProcessView]:
        return [ProcessView(role=r, pid=None, alive=r in self.alive) for r in sorted(self.alive)]


@dataclass
class FakeNotifier:
    """Records what would go to systemd's notify socket."""

    sent: list[str] = field(default_factory=list)
    watchdog_interval: float | None = None

    def ready(self, status: str) -> None:
        self.sent.append(f"READY {status}")

    def status(self, status: str) -> None:
        self.sent.append(f"STATUS {status}")

    def stopping(self, status: str) -> None:
        self.sent.append(f"STOPPING {status}")

    def watchdog(self) -> None:
        self.sent.append("WATCHDOG")


TERM, KILL = signal.SIGTERM, signal.SIGKILL
