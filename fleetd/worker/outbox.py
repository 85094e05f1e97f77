"""What the worker sends, held a few milliseconds where that lets it share one ZeroMQ message.

Each ZeroMQ message costs ~40 us of CPU at each end here (both ends' I/O threads wake), and a
short task's hand-offs came as eight of them. Some of what the worker sends need not go at
once: that an agent started (the broker stores it with its next write anyway), event batches
(already in the spool, the source of truth), and a result whose worker already runs its next
agent (that agent's end follows within milliseconds for short tasks). Those are made with
`wait=True`, held at most HOLD_SECONDS, and go in the same ZeroMQ message as the next urgent
one to the same peer (a WorkerFree, a StreamEnd, a heartbeat), one frame each, in the order
they were made. So a short task costs one message each way between worker and broker and
between worker and recorder. Socket-free: the process module asks what to send now and when
to ask again.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared import messages as m

HOLD_SECONDS = 0.02  # how late a live follower may see events, or a result be stored
# A result whose worker waits for its next Assign: held only as long as that Assign takes
# to come (then it goes with what the next agent's end sends), so that a fleet's last result
# is not stored later than this.
NEXT_ASSIGN_SECONDS = 0.002
HOLD_BYTES = 1 << 20  # a chatty agent's held batches go once they add up to this


@dataclass(frozen=True)
class ToBroker:
    message: m.Message
    wait: bool = False  # may be held to go with the next message to the broker
    hold: float = HOLD_SECONDS  # at most this long (seconds), when it may wait
    not_after: float = float("inf")  # and never past this time (monotonic seconds)


@dataclass(frozen=True)
class ToRecorder:
    """An encoded recorder request; `seals` names the execution whose StreamEnd it is."""

    payload: bytes
    seals: int | None = None
    wait: bool = False  # may be held to go with the next message to the recorder
    hold: float = HOLD_SECONDS  # at most this long (seconds), when it may wait


Outgoing = ToBroker | ToRecorder


class _Held:
    """One peer's held messages."""

    def __init__(self) -> None:
        self.items: list[Outgoing] = []
        self.size = 0
        self.due = float("inf")
        self.since = float("inf")  # when the first of them was held
        self.urgent = False  # one of them may not wait
        self.latest = float("inf")  # the earliest `not_after` among them

    def add(self, item: Outgoing, now: float) -> None:
        if not self.items:
            self.since = now
        if isinstance(item, ToBroker):
            self.latest = min(self.latest, item.not_after)
        self.due = min(self.due, now + item.hold, self.latest)
        self.urgent = self.urgent or not item.wait
        self.items.append(item)
        self.size += len(item.payload) if isinstance(item, ToRecorder) else 0

    def ready(self, now: float) -> bool:
        return bool(self.items) and (self.urgent or now >= self.due or self.size >= HOLD_BYTES)

    def take(self) -> list[Outgoing]:
        items, self.items, self.size, self.urgent = self.items, [], 0, False
        self.due = self.since = self.latest = float("inf")
        return items


class Outbox:
    """Held messages per peer; `take` says what to send now: one list per ZeroMQ message."""

    def __init__(self) -> None:
        self.broker = _Held()
        self.recorder = _Held()

    def take(
        self, items: list[Outgoing], now: float, agent_running: bool = False
    ) -> list[list[Outgoing]]:
        """`items` in the order made, then the messages to send now, grouped by peer. A peer's
        held messages go with its first urgent one, or once due (the shortest hold among them
        has passed) or large. With `agent_running`, a result held for the next Assign (which
        came: its agent runs) waits for that agent's end, as long as anything else may."""
        for item in items:
            (self.broker if isinstance(item, ToBroker) else self.recorder).add(item, now)
        if agent_running and self.broker.items:
            held = self.broker
            held.due = min(max(held.due, held.since + HOLD_SECONDS), held.latest)
        return [held.take() for held in (self.broker, self.recorder) if held.ready(now)]

    def flush(self) -> list[list[Outgoing]]:
        """Everything held, now (the worker is exiting)."""
        return [held.take() for held in (self.broker, self.recorder) if held.items]

    @property
    def next_due(self) -> float:
        return min(self.broker.due, self.recorder.due)
