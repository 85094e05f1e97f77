"""A task's events for the web: the stored ones page by page, then the live ones from the
recorder's feed until the task ends, resuming after a given position (an SSE Last-Event-ID).

Events go out in batches, as they come (a page of the store, a batch of the feed): one SSE
message per batch, not per event, is what keeps a followed task from costing the fleet.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import zmq
import zmq.asyncio

from fleetd.web.control import Control, feed_of
from fleetd.web.logic import follows
from shared import messages as m
from shared.models import TERMINAL_STATES, EventRecord

# How often a follower asks whether its task has ended when no sealed stream said so (a
# sealed stream asks at once): rarely, since each ask is the broker's work too.
STATE_CHECK_SECONDS = 5.0
# A sealed stream's run is reported by its worker at once, and the task turns final moments
# later: after a seal the state is looked at this often, for this long, not every 5 s.
SEALED_CHECK_SECONDS = 0.1
SEALED_CHECK_WINDOW = 5.0

Batch = list[EventRecord]


async def stored(control: Control, task: int, position: tuple[int, int]) -> AsyncIterator[Batch]:
    """Every stored event after `position`, in (execution, seq) order, a page at a time."""
    while True:
        execution, seq = position
        page = await control.ask(m.GetEvents(task=task, after_execution=execution, after_seq=seq))
        assert isinstance(page, m.EventPage)
        if page.events:
            last = page.events[-1]
            position = (last.execution, last.seq)
            yield page.events
        if not page.more or not page.events:
            return


class Follower:
    """Where a live stream is, so that nothing is sent twice and a gap is filled first."""

    def __init__(self, control: Control, task: int, position: tuple[int, int]) -> None:
        self.control, self.task, self.position = control, task, position

    def after(self, events: Batch) -> Batch:
        """The events of `events` past the position, which moves to the last of them."""
        fresh = [e for e in events if (e.execution, e.seq) > self.position]
        if fresh:
            self.position = (fresh[-1].execution, fresh[-1].seq)
        return fresh

    async def catch_up(self) -> AsyncIterator[Batch]:
        async for page in stored(self.control, self.task, self.position):
            fresh = self.after(page)
            if fresh:
                yield fresh

    async def finished(self) -> bool:
        detail = await self.control.ask(m.ShowTask(task=self.task))
        assert isinstance(detail, m.TaskDetail)
        return detail.task.state in TERMINAL_STATES


async def live(
    control: Control,
    context: zmq.asyncio.Context,
    feed_endpoint: str,
    task: int,
    position: tuple[int, int],
    fill_gaps: bool = True,
) -> AsyncIterator[Batch]:
    """The stored events after `position`, then each new batch as the agent prints it, until
    the task is in a final state (then the last stored ones, and the iterator ends). Without
    `fill_gaps` (a page that shows only the newest events of a firehose anyway), a batch
    that does not follow on is sent as it is, not preceded by the missing ones."""
    follower = Follower(control, task, position)
    async with feed_of(context, feed_endpoint, task) as feed:
        # Subscribed first, then caught up: a batch that does not follow on from what was
        # sent (a late subscription, a dropped message) is filled in from the store.
        async for batch in follower.catch_up():
            yield batch
        next_check = time.monotonic()  # a task that has ended already ends its stream at once
        soon_until = 0.0  # after a seal: when to go back to the regular checks
        while True:
            sealed = False
            wait = max(0.0, next_check - time.monotonic())
            if await feed.poll(int(wait * 1000), zmq.POLLIN):
                _, payload = await feed.recv_multipart()
                message = m.FEED.decode(payload)
                if isinstance(message, m.EventBatch):
                    first = message.events[0] if message.events else None
                    gap = first and not follows(follower.position, first.execution, first.seq)
                    if gap and fill_gaps:
                        async for batch in follower.catch_up():
                            yield batch
                    fresh = follower.after(message.events)
                    if fresh:
                        yield fresh
                    if time.monotonic() < next_check:
                        continue
                else:
                    sealed = True
            if sealed:
                soon_until = time.monotonic() + SEALED_CHECK_WINDOW
            if sealed or time.monotonic() >= next_check:
                soon = time.monotonic() < soon_until
                next_check = time.monotonic() + (
                    SEALED_CHECK_SECONDS if soon else STATE_CHECK_SECONDS
                )
                if not soon:
                    # A task another node runs (a shared PostgreSQL log) is not on this
                    # node's feed: its stored events come from the store at each check.
                    async for batch in follower.catch_up():
                        yield batch
                if await follower.finished():
                    async for batch in follower.catch_up():
                        yield batch
                    return
