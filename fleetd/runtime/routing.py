"""Requests that arrive on a ROUTER socket and the messages sent back, without a socket.

A request is the peer's identity, the reference it wants echoed, and one or more
msgpack-encoded messages, one frame each, handled in order. A sender puts what it has for one
peer in one loop turn into one ZeroMQ message: on this 2-core machine a ZeroMQ message costs
~40 us of CPU to send and ~40 us to receive (each wakes both ends' I/O threads), against a
few us for one more frame, and a task's hand-offs were eight messages. The broker's and the
recorder's logic answer with `ToPeer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from loguru import logger

from shared import messages as m


@dataclass(frozen=True)
class ToPeer:
    """A message for one peer of a ROUTER socket, echoing the reference of the request it
    answers (empty when it answers none, like an Assign)."""

    peer: bytes
    ref: bytes
    message: m.Message


@dataclass(frozen=True)
class Request:
    """A decoded request and the bytes it came as (a batch is republished as it came)."""

    peer: bytes
    ref: bytes
    message: m.Message
    raw: bytes


def read_requests(frames: list[bytes], codec: m.Codec, role: str) -> list[Request | ToPeer]:
    """The requests in `frames`, in order; a typed error for its sender in place of one that
    cannot be decoded (never a crash); none, logged, when the frames are not a request."""
    if len(frames) < 3:
        logger.warning("dropping a malformed {} message ({} frames)", role, len(frames))
        return []
    peer, ref = frames[0], frames[1]
    out: list[Request | ToPeer] = []
    for raw in frames[2:]:
        try:
            out.append(Request(peer, ref, codec.decode(raw), raw))
        except Exception as exc:  # msgspec's DecodeError, or worse: the sender hears why
            out.append(ToPeer(peer, ref, m.ErrorReply(code="bad_request", message=str(exc))))
    return out


def by_peer(out: Iterable[ToPeer]) -> list[list[ToPeer]]:
    """`out` as the ZeroMQ messages to send: what goes to one peer without a reference
    (workers: Assign, FinishAck, CancelExecution...) shares one message, in order; a reply
    to a request with a reference (the supervisor's) goes alone, as its reader expects."""
    groups: list[list[ToPeer]] = []
    shared: dict[bytes, list[ToPeer]] = {}
    for item in out:
        if item.ref:
            groups.append([item])
            continue
        group = shared.get(item.peer)
        if group is None:
            group = shared[item.peer] = []
            groups.append(group)
        group.append(item)
    return groups
