"""The web process's way to the supervisor: typed requests over the control socket, each on
a DEALER of its own (replies to one DEALER come in the order the supervisor has answers, not
the order of the requests), and the recorder's feed for live events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import zmq
import zmq.asyncio

from shared import messages as m
from shared.errors import DaemonUnavailable, RequestFailed

IDLE_SOCKETS_KEPT = 16
HWM = 10_000


class Control:
    """Asks the supervisor; a reply that is an ErrorReply raises RequestFailed, no answer in
    time raises DaemonUnavailable. One per web process."""

    def __init__(self, context: zmq.asyncio.Context, path: Path, timeout: float) -> None:
        self.context = context
        self.endpoint = "ipc://" + str(path)
        self.path = path
        self.timeout = timeout
        self.idle: list[zmq.asyncio.Socket] = []

    def _socket(self) -> zmq.asyncio.Socket:
        if self.idle:
            return self.idle.pop()
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        return sock

    async def ask(self, request: m.Message) -> m.Message:
        try:
            data = m.CONTROL_REQUESTS.checked(request)
        except msgspec.ValidationError as exc:
            raise RequestFailed("bad_request", f"invalid request: {exc}") from None
        sock = self._socket()
        done = False
        try:
            await sock.send(data)
            if not await sock.poll(int(self.timeout * 1000), zmq.POLLIN):
                raise DaemonUnavailable(
                    f"fleetd did not answer within {self.timeout:g} s; it may be stopping "
                    "or busy: try again shortly"
                )
            reply = m.CONTROL_REPLIES.decode(await sock.recv())
            done = True
        finally:
            # A socket whose request was not answered (timeout, a client gone) could hand a
            # late reply to the next request: it is closed, never reused.
            if done and len(self.idle) < IDLE_SOCKETS_KEPT:
                self.idle.append(sock)
            else:
                sock.close(linger=0)
        if isinstance(reply, m.ErrorReply):
            raise RequestFailed(reply.code, reply.message)
        return reply

    def close(self) -> None:
        for sock in self.idle:
            sock.close(linger=0)
        self.idle.clear()


@contextlib.asynccontextmanager
async def feed_of(
    context: zmq.asyncio.Context, endpoint: str, task: int
) -> AsyncIterator[zmq.asyncio.Socket]:
    """A SUB socket on the recorder's feed, subscribed to one task."""
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.setsockopt(zmq.SUBSCRIBE, m.feed_topic(task))
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close(linger=0)
