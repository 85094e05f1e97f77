"""The HTTP API, `/api/v1/...`: the objects `fleetctl --json` prints, through the same
requests to the supervisor; errors as JSON with fleetctl's meanings (400, 404, 503)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from fleetd.web import streams
from fleetd.web.app import FastJSON, guarded, web_of
from fleetd.web.event_lines import batch_json, batch_lines
from fleetd.web.logic import BadQuery, event_id, list_request, next_page_query, resume_position
from fleetd.web.openapi import openapi_document
from shared import messages as m
from shared.models import TaskSpec, spec_problem
from shared.tracker import task_link
from shared.views import (
    cancelled_json,
    diff_json,
    enqueued_json,
    retried_json,
    status_json,
    task_json,
    worker_json,
)

_json = msgspec.json.Encoder()
PAGE_BATCH_MAX = 200  # events of one batch a task page is sent live (the newest)


def task_id(request: Request) -> int:
    text = request.path_params["task"]
    if not text.isdigit() or len(text) > 18:
        raise BadQuery(f"{text!r} is not a task id (a positive whole number)")
    return int(text)


@guarded()
async def status(request: Request) -> Response:
    reply = await web_of(request).control.ask(m.GetStatus())
    assert isinstance(reply, m.Status)
    return FastJSON(status_json(reply))


@guarded()
async def workers(request: Request) -> Response:
    reply = await web_of(request).control.ask(m.ListWorkers())
    assert isinstance(reply, m.WorkerList)
    return FastJSON([worker_json(w) for w in reply.workers])


@guarded()
async def list_tasks(request: Request) -> Response:
    ask = list_request(request.query_params)
    reply = await web_of(request).control.ask(ask)
    assert isinstance(reply, m.TaskList)
    headers = {}
    if reply.next_before is not None:  # a short page of a filtered listing may go on
        query = next_page_query(ask, reply.next_before)
        headers["link"] = f'</api/v1/tasks?{query}>; rel="next"'
    return FastJSON([task_json(t, with_executions=False) for t in reply.tasks], headers=headers)


@guarded()
async def show_task(request: Request) -> Response:
    reply = await web_of(request).control.ask(m.ShowTask(task=task_id(request)))
    assert isinstance(reply, m.TaskDetail)
    shown = task_json(reply.task, with_executions=True)
    # As `fleetctl show --json`: a task the tracker made names its issue and pull request.
    link = task_link(web_of(request).state_dir, reply.task.id) if reply.task.spec.key else None
    return FastJSON({**shown, "tracker": link} if link else shown)


@guarded()
async def task_events(request: Request) -> Response:
    """JSON lines of the stored events; with `Accept: text/event-stream`, SSE that follows the
    task live and resumes after `Last-Event-ID`."""
    web = web_of(request)
    task = task_id(request)
    await web.control.ask(m.ShowTask(task=task))  # a clear 404 before any stream starts
    if "text/event-stream" in request.headers.get("accept", ""):
        position = resume_position(request.headers.get("last-event-id"))
        newest_only = request.query_params.get("view") == "page"
        return EventSourceResponse(_sse(request, task, position, newest_only), ping=15)

    async def lines() -> AsyncIterator[bytes]:
        async for page in streams.stored(web.control, task, (0, 0)):
            yield batch_lines(page)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def _sse(
    request: Request, task: int, position: tuple[int, int], newest_only: bool
) -> AsyncIterator[Any]:
    """One SSE message (`events`) per batch: a JSON array of events as `events --json` prints
    them, its id the last one's; `end` once the task is in a final state.

    `newest_only` (`?view=page`, what the task page asks for): of a batch larger than
    PAGE_BATCH_MAX, only its newest events are sent, after a `skipped` message that counts
    the others; gaps are not filled. A person reads a few events a second: relaying a
    firehose to a browser would cost the fleet more than the page is worth (bench web)."""
    web = web_of(request)
    batches = streams.live(
        web.control, web.context, web.feed_endpoint, task, position, fill_gaps=not newest_only
    )
    async for batch in batches:
        if newest_only and len(batch) > PAGE_BATCH_MAX:
            skipped = len(batch) - PAGE_BATCH_MAX
            batch = batch[skipped:]
            first = batch[0]
            data = {"count": skipped, "before": event_id(first.execution, first.seq)}
            yield {"event": "skipped", "data": _json.encode(data).decode()}
        last = batch[-1]
        yield {
            "id": event_id(last.execution, last.seq),
            "event": "events",
            "data": batch_json(batch).decode(),
        }
    yield {"event": "end", "data": "{}"}


@guarded()
async def task_diff(request: Request) -> Response:
    execution_text = request.query_params.get("execution")
    if execution_text is not None and not execution_text.isdigit():
        raise BadQuery(f"execution must be an execution id, not {execution_text!r}")
    execution = int(execution_text) if execution_text else None
    ask = m.GetDiff(task=task_id(request), execution=execution)
    reply = await web_of(request).control.ask(ask)
    assert isinstance(reply, m.TaskDiff)
    return FastJSON(diff_json(reply))


def specs_of(body: bytes) -> list[TaskSpec]:
    """One task spec or a list of them, as `fleetctl enqueue --file` takes each line."""
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise BadQuery(f"the body is not JSON: {exc}") from None
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise BadQuery("send one task spec (an object with a prompt) or a list of them")
    specs = []
    for index, item in enumerate(items, start=1):
        where = f"task {index}: " if isinstance(raw, list) else ""
        try:
            spec = msgspec.convert(item, TaskSpec)
        except msgspec.ValidationError as exc:
            raise BadQuery(f"{where}{m.plain_words(str(exc))}") from None
        problem = spec_problem(spec)
        if problem is not None:
            raise BadQuery(where + problem)
        specs.append(spec)
    return specs


@guarded(mutating=True)
async def enqueue(request: Request) -> Response:
    specs = specs_of(await request.body())
    reply = await web_of(request).control.ask(m.Enqueue(tasks=specs))
    assert isinstance(reply, m.Enqueued)
    return FastJSON(enqueued_json(reply), status_code=201)


@guarded(mutating=True)
async def cancel(request: Request) -> Response:
    reply = await web_of(request).control.ask(m.CancelTask(task=task_id(request)))
    assert isinstance(reply, m.Cancelled)
    return FastJSON(cancelled_json(reply))


@guarded(mutating=True)
async def retry(request: Request) -> Response:
    resume = request.query_params.get("resume", "false").lower() in ("1", "true", "yes")
    reply = await web_of(request).control.ask(m.RetryTask(task=task_id(request), resume=resume))
    assert isinstance(reply, m.Retried)
    return FastJSON(retried_json(reply))


@guarded()
async def openapi(request: Request) -> Response:
    return FastJSON(openapi_document())


ROUTES = [
    Route("/api/v1/status", status),
    Route("/api/v1/workers", workers),
    Route("/api/v1/tasks", list_tasks, methods=["GET"]),
    Route("/api/v1/tasks", enqueue, methods=["POST"]),
    Route("/api/v1/tasks/{task}", show_task),
    Route("/api/v1/tasks/{task}/events", task_events),
    Route("/api/v1/tasks/{task}/diff", task_diff),
    Route("/api/v1/tasks/{task}/cancel", cancel, methods=["POST"]),
    Route("/api/v1/tasks/{task}/retry", retry, methods=["POST"]),
    Route("/api/v1/openapi.json", openapi),
]
