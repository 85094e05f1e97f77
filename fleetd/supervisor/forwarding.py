"""Requests the supervisor forwards to the broker or the recorder, waiting for their answers.

Socket-free: each request gets a fresh reference frame and is returned as an `Outgoing` to
send; the answer comes back with that reference. An answer may be handed to a callback first
(which may turn it into another reply, or answer later itself), and a request unanswered by
its deadline gets an `unavailable` error, so that a client never waits on a restarting child.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from shared import messages as m

FORWARD_TIMEOUT = 10.0

# Given the answer and `now`: the reply for the client, or None (none, or not yet).
Then = Callable[[m.Message, float], m.Message | None]


class Peer(enum.Enum):
    """Where an outgoing message of the supervisor goes."""

    CLIENT = "client"  # a control client (fleetctl): `ident` is its ZeroMQ identity
    BROKER = "broker"  # `ident` is the request's reference
    RECORDER = "recorder"


@dataclass(frozen=True)
class Outgoing:
    to: Peer
    ident: bytes
    message: m.Message


@dataclass
class Forward:
    """A request waiting for the broker's or recorder's answer."""

    client: bytes | None  # None: the supervisor asked for itself
    deadline: float
    then: Then | None = None


def unavailable() -> m.ErrorReply:
    return m.ErrorReply(
        code="unavailable",
        message="fleetd's internal service did not answer in time (restarting?); try again",
    )


class Forwarder:
    """Gives requests a reference, matches answers to them, expires the late ones."""

    def __init__(self) -> None:
        self.pending: dict[bytes, Forward] = {}
        self.next_ref = 0

    def ask(
        self, to: Peer, request: m.Message, client: bytes | None, then: Then | None, now: float
    ) -> Outgoing:
        """The request to send; its answer goes to `then`, then to `client` (if any)."""
        self.next_ref += 1
        ref = self.next_ref.to_bytes(8, "little")
        self.pending[ref] = Forward(client, now + FORWARD_TIMEOUT, then)
        return Outgoing(to, ref, request)

    def answer(self, ref: bytes, answer: m.Message, now: float) -> list[Outgoing]:
        """An answer came back (after the deadline, it is dropped)."""
        forward = self.pending.pop(ref, None)
        if forward is None:
            return []
        reply: m.Message | None = answer
        if forward.then is not None:
            reply = self._then(forward.then, answer, now)
        if forward.client is None or reply is None:
            return []
        return [Outgoing(Peer.CLIENT, forward.client, reply)]

    @staticmethod
    def _then(then: Then, answer: m.Message, now: float) -> m.Message | None:
        """Run a continuation (a gc choosing worktrees, a diff read from disk): whatever it
        raises is logged and becomes its client's typed error, never the supervisor's end."""
        try:
            return then(answer, now)
        except Exception:
            logger.exception("the supervisor failed handling an answer")
            return m.ErrorReply(code="internal", message="fleetd failed; see the fleetd log")

    def undecodable(self, ref: bytes, now: float) -> list[Outgoing]:
        logger.error("undecodable internal reply")
        error = m.ErrorReply(code="internal", message="internal error; see fleetd log")
        return self.answer(ref, error, now)

    def undeliverable(self, ref: bytes) -> list[Outgoing]:
        """The request could not be sent (the child's queue is full): its client hears so."""
        forward = self.pending.pop(ref, None)
        if forward is None or forward.client is None:
            return []
        return [Outgoing(Peer.CLIENT, forward.client, unavailable())]

    def expire(self, now: float) -> list[Outgoing]:
        out = []
        for ref in [r for r, f in self.pending.items() if f.deadline < now]:
            forward = self.pending.pop(ref)
            if forward.client is not None:
                out.append(Outgoing(Peer.CLIENT, forward.client, unavailable()))
        return out
