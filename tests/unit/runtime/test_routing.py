"""Several messages in one ZeroMQ message: read in order, grouped by peer when sent."""

from __future__ import annotations

from fleetd.runtime.routing import Request, ToPeer, by_peer, read_requests
from shared import messages as m
from shared.models import ExecutionResult


def test_every_frame_after_the_reference_is_a_request_in_order() -> None:
    free = m.WorkerFree(worker="w1", pid=1, execution=2)
    done = m.Finished(execution=1, outcome="succeeded", result=ExecutionResult(), released=True)
    frames = [b"w1", b"", m.BROKER_REQUESTS.encode(done), b"\xc1", m.BROKER_REQUESTS.encode(free)]
    first, bad, last = read_requests(frames, m.BROKER_REQUESTS, "broker")
    assert isinstance(first, Request) and first.message == done and first.peer == b"w1"
    assert isinstance(bad, ToPeer) and isinstance(bad.message, m.ErrorReply)
    assert isinstance(last, Request) and last.message == free


def test_a_message_without_a_request_is_dropped() -> None:
    assert read_requests([b"w1", b""], m.BROKER_REQUESTS, "broker") == []


def test_what_goes_to_one_worker_shares_a_message_and_replies_with_a_reference_go_alone() -> None:
    ack = ToPeer(b"w1", b"", m.FinishAck(execution=1))
    nxt = ToPeer(b"w1", b"", m.FinishAck(execution=2))
    other = ToPeer(b"w2", b"", m.FinishAck(execution=3))
    reply_a = ToPeer(b"sup", b"r1", m.Accepted())
    reply_b = ToPeer(b"sup", b"r2", m.Accepted())
    groups = by_peer([ack, reply_a, other, nxt, reply_b])
    assert groups == [[ack, nxt], [reply_a], [other], [reply_b]]
