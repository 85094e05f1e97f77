"""Requests the supervisor forwards to the broker or the recorder, waiting for their answers.

Each request carries a fresh reference frame; the answer comes back with it. An answer may be
handed to a callback first (which may turn it into another reply, or answer later itself),
and a request unanswered by its deadline gets an `unavailable` error, so that a client never
waits on a restarting child.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from loguru import logger

from shared import messages as m

FORWARD_TIMEOUT = 10.0

Then = Callable[[m.Message], m.Message | None]
Reply = Callable[[bytes, m.Message], None]


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
    """Sends requests with a reference, matches answers to them, expires the late ones."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply  # sends a message to a control client
        self.pending: dict[bytes, Forward] = {}
        self.next_ref = 0

    def ask(
        self,
        sock: zmq.Socket,
        codec: m.Codec,
        request: m.Message,
        client: bytes | None,
        then: Then | None,
    ) -> None:
        self.next_ref += 1
        ref = self.next_ref.to_bytes(8, "little")
        self.pending[ref] = Forward(client, time.monotonic() + FORWARD_TIMEOUT, then)
        try:
            sock.send_multipart([ref, codec.encode(request)], zmq.NOBLOCK)
        except zmq.Again:
            del self.pending[ref]
            if client is not None:
                self.reply(client, unavailable())

    def on_replies(self, sock: zmq.Socket, codec: m.Codec) -> None:
        """Take the answers waiting on `sock` (a bounded number per call)."""
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            forward = self.pending.pop(frames[0], None) if len(frames) == 2 else None
            if forward is None:
                continue  # the answer came after we gave up on it
            try:
                answer: m.Message | None = codec.decode(frames[1])
            except Exception:
                logger.exception("undecodable internal reply")
                answer = m.ErrorReply(code="internal", message="internal error; see fleetd log")
            if forward.then is not None and answer is not None:
                answer = forward.then(answer)
            if forward.client is not None and answer is not None:
                self.reply(forward.client, answer)

    def expire(self, now: float) -> None:
        for ref in [r for r, f in self.pending.items() if f.deadline < now]:
            forward = self.pending.pop(ref)
            if forward.client is not None:
                self.reply(forward.client, unavailable())
