"""`fleetctl events`: a task's stored events in order, and with --follow the live ones too."""

from __future__ import annotations

import time
from typing import Annotated

import typer
import zmq

from fleetctl.common import (
    JsonOption,
    daemon_errors,
    event_json,
    print_json,
    session,
    short_time,
)
from fleetctl.display import visible_line
from shared import messages as m
from shared.client import ControlClient
from shared.models import TERMINAL_STATES, EventRecord, flag_names

app = typer.Typer()

STATE_CHECK_SECONDS = 1.0
PREVIEW_BYTES = 300


class Printer:
    """Prints events once each, in (execution, seq) order, remembering where it is."""

    def __init__(self, json_out: bool) -> None:
        self.json_out = json_out
        self.position = (0, 0)

    def show(self, events: list[EventRecord]) -> None:
        for event in events:
            if (event.execution, event.seq) <= self.position:
                continue
            self.position = (event.execution, event.seq)
            if self.json_out:
                print_json(event_json(event))
            else:
                typer.echo(_human(event))

    def follows(self, event: EventRecord) -> bool:
        """Does `event` come right after what was printed (no gap to fetch first)?"""
        execution, seq = self.position
        return (event.execution == execution and event.seq == seq + 1) or (
            event.execution > execution and event.seq == 1
        )


def _human(event: EventRecord) -> str:
    text = visible_line(event.payload[:PREVIEW_BYTES].decode("utf-8", errors="backslashreplace"))
    if len(event.payload) > PREVIEW_BYTES:
        text += f"… ({len(event.payload)} bytes)"
    flags = flag_names(event.flags)
    mark = f" [{','.join(flags)}]" if flags else ""
    kind = visible_line(event.type)
    return f"{event.execution}:{event.seq}  {short_time(event.ts)}  {kind}{mark}  {text}"


def _catch_up(client: ControlClient, task: int, printer: Printer) -> None:
    """Print every stored event after the printer's position."""
    while True:
        execution, seq = printer.position
        page = client.request(m.GetEvents(task=task, after_execution=execution, after_seq=seq))
        assert isinstance(page, m.EventPage)
        printer.show(page.events)
        if not page.more:
            return


@app.command()
def events(
    ctx: typer.Context,
    task: Annotated[int, typer.Argument(help="task id")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="stream live events until the task ends")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Print a task's events (every line its agents printed), in order."""
    printer = Printer(json_out)
    with session(ctx).client() as client, daemon_errors():
        client.request(m.ShowTask(task=task))  # a clear "no task N" before anything else
        if not follow:
            _catch_up(client, task, printer)
            return
        _follow(client, task, printer)


def _follow(client: ControlClient, task: int, printer: Printer) -> None:
    status = client.request(m.GetStatus())
    assert isinstance(status, m.Status)
    context = zmq.Context()
    feed = context.socket(zmq.SUB)
    feed.setsockopt(zmq.LINGER, 0)
    feed.setsockopt(zmq.SUBSCRIBE, m.feed_topic(task))
    feed.connect(status.feed)
    codec = m.FEED
    try:
        # Subscribed first, then caught up; a live batch that does not follow on from what
        # was printed (a late subscription, a dropped message) triggers another catch-up.
        _catch_up(client, task, printer)
        next_check = 0.0
        while True:
            sealed = False
            if feed.poll(int(STATE_CHECK_SECONDS * 1000)):
                _, payload = feed.recv_multipart()
                message = codec.decode(payload)
                if isinstance(message, m.EventBatch):
                    if message.events and not printer.follows(message.events[0]):
                        _catch_up(client, task, printer)
                    printer.show(message.events)
                    continue
                sealed = True
            if sealed or time.monotonic() >= next_check:
                next_check = time.monotonic() + STATE_CHECK_SECONDS
                detail = client.request(m.ShowTask(task=task))
                assert isinstance(detail, m.TaskDetail)
                if detail.task.state in TERMINAL_STATES:
                    _catch_up(client, task, printer)
                    return
    finally:
        feed.close()
        context.term()
