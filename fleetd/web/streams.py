"""A task's events for the web: the stored ones page by page, then the live ones from the
recorder's feed until the task ends, resuming after a given position (an SSE Last-Event-ID)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import zmq
import zmq.asyncio

from fleetd.web.control import Control, feed_of
from fleetd.web.logic import follows
from shared import messages as m
from shared.models import TERMINAL_STATES, EventRecord

STATE_CHECK_SECONDS = 1.0


async def stored(
    control: Control, task: int, position: tuple[int, int]
) -> AsyncIterator[EventRecord]:
    """Every stored event after `position`, in (execution, seq) order."""
    while True:
        execution, seq = position
        page = await control.ask(m.GetEvents(task=task, after_execution=execution, after_seq=seq))
        assert isinstance(page, m.EventPage)
        for event in page.events:
            position = (event.execution, event.seq)
            yield event
        if not page.more or not page.events:
            return


async def live(
    control: Control,
    context: zmq.asyncio.Context,
    feed_endpoint: str,
    task: int,
    position: tuple[int, int],
) -> AsyncIterator[EventRecord]:
    """The stored events after `position`, then each new one as the agent prints it, until
    the task is in a final state (then the last stored ones, and the iterator ends)."""
    async with feed_of(context, feed_endpoint, task) as feed:
        # Subscribed first, then caught up: a batch that does not follow on from what was
        # sent (a late subscription, a dropped message) is filled in from the store.
        async for event in stored(control, task, position):
            position = (event.execution, event.seq)
            yield event
        next_check = time.monotonic() + STATE_CHECK_SECONDS
        while True:
            sealed = False
            if await feed.poll(int(STATE_CHECK_SECONDS * 1000), zmq.POLLIN):
                _, payload = await feed.recv_multipart()
                message = m.FEED.decode(payload)
                if isinstance(message, m.EventBatch):
                    events = message.events
                    if events and not follows(position, events[0].execution, events[0].seq):
                        async for event in stored(control, task, position):
                            position = (event.execution, event.seq)
                            yield event
                    for event in events:
                        if (event.execution, event.seq) > position:
                            position = (event.execution, event.seq)
                            yield event
                    if time.monotonic() < next_check:
                        continue
                else:
                    sealed = True
            if sealed or time.monotonic() >= next_check:
                next_check = time.monotonic() + STATE_CHECK_SECONDS
                detail = await control.ask(m.ShowTask(task=task))
                assert isinstance(detail, m.TaskDetail)
                if detail.task.state in TERMINAL_STATES:
                    async for event in stored(control, task, position):
                        yield event
                    return
