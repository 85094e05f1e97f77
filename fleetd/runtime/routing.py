"""Requests that arrive on a ROUTER socket and the messages sent back, without a socket.

A request is three frames: the peer's identity, the reference it wants echoed, and the
msgpack-encoded message. The broker's and the recorder's logic answer with `ToPeer`.
"""

from __future__ import annotations

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


def read_request(frames: list[bytes], codec: m.Codec, role: str) -> Request | ToPeer | None:
    """The request in `frames`; a typed error for its sender if it cannot be decoded (never a
    crash); None, logged, when the frames are not a request at all."""
    if len(frames) != 3:
        logger.warning("dropping a malformed {} message ({} frames)", role, len(frames))
        return None
    peer, ref, raw = frames
    try:
        return Request(peer, ref, codec.decode(raw), raw)
    except Exception as exc:  # msgspec's DecodeError, or worse: the sender hears why
        return ToPeer(peer, ref, m.ErrorReply(code="bad_request", message=str(exc)))
