"""The dashboard's pages, rendered on the server (Jinja2), and their forms' actions; the
live parts (a task's events) are EventSource in a small script, no build step."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from fleetd.web.api import specs_of, task_id
from fleetd.web.app import STATIC_DIR, error_page, guarded, web_of
from fleetd.web.logic import (
    AGENT_KINDS,
    PAGE_SIZE,
    SESSION_COOKIE,
    BadQuery,
    list_request,
    next_page_query,
)
from fleetd.web.overview import describe, recent_rates
from shared import messages as m
from shared.models import TASK_STATES, TERMINAL_STATES, rfc3339
from shared.tracker import task_link
from shared.views import task_json

COOKIE_SECONDS = 30 * 24 * 3600
RECENT_TASKS = 1000  # the overview's hour of rates is read from this many newest tasks


def render(request: Request, name: str, **values: Any) -> Response:
    web = web_of(request)
    template = web.templates.get_template(name)
    html = template.render(csrf=web.access.csrf, states=TASK_STATES, time=_time, **values)
    return HTMLResponse(html)


def _time(us: int | None) -> str:
    stamp = rfc3339(us)
    return stamp[:19].replace("T", " ") if stamp else "-"


async def login(request: Request) -> Response:
    """The link `fleetctl dashboard` prints: the token, once, for a session cookie."""
    web = web_of(request)
    if not web.access.token_ok(request.query_params.get("token")):
        return error_page(request, 401, "not_logged_in")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        web.access.session,
        max_age=COOKIE_SECONDS,
        httponly=True,
        samesite="strict",
        path="/",
    )
    return response


@guarded(page=True)
async def overview(request: Request) -> Response:
    control = web_of(request).control
    status, running, recent = await asyncio.gather(
        control.ask(m.GetStatus()),
        control.ask(m.ListTasks(state="running", limit=100)),
        control.ask(m.ListTasks(limit=RECENT_TASKS)),
    )
    assert isinstance(status, m.Status)
    assert isinstance(running, m.TaskList)
    assert isinstance(recent, m.TaskList)
    counts = {state: status.counts.get(state, 0) for state in TASK_STATES}
    rates = recent_rates(recent.tasks)
    worker_of = {w.task: w.id for w in status.workers if w.task is not None}
    pages = await asyncio.gather(
        *(control.ask(m.GetEvents(task=t.id, limit=1, latest=True)) for t in running.tasks)
    )
    latest = {
        t.id: describe(page.events[-1])
        for t, page in zip(running.tasks, pages, strict=True)
        if isinstance(page, m.EventPage) and page.events
    }
    return render(
        request,
        "overview.html",
        status=status,
        counts=counts,
        running=running.tasks,
        rates=rates,
        worker_of=worker_of,
        latest=latest,
    )


@guarded(page=True)
async def tasks(request: Request) -> Response:
    ask = list_request(request.query_params, PAGE_SIZE)
    reply = await web_of(request).control.ask(ask)
    assert isinstance(reply, m.TaskList)
    older = next_page_query(ask, reply.next_before) if reply.next_before is not None else None
    return render(
        request, "tasks.html", tasks=reply.tasks, ask=ask, older=older, agents=AGENT_KINDS
    )


@guarded(page=True)
async def task(request: Request) -> Response:
    reply = await web_of(request).control.ask(m.ShowTask(task=task_id(request)))
    assert isinstance(reply, m.TaskDetail)
    view = reply.task
    spec = msgspec.json.encode(task_json(view, with_executions=False)["spec"])
    return render(
        request,
        "task.html",
        task=view,
        spec_json=msgspec.json.format(spec, indent=2).decode(),
        finished=view.state in TERMINAL_STATES,
        link=task_link(web_of(request).state_dir, view.id) if view.spec.key else None,
    )


@guarded(page=True)
async def diff(request: Request) -> Response:
    reply = await web_of(request).control.ask(m.GetDiff(task=task_id(request)))
    assert isinstance(reply, m.TaskDiff)
    lines = reply.patch.decode("utf-8", errors="replace").splitlines()
    return render(request, "diff.html", diff=reply, lines=[(_line_kind(x), x) for x in lines])


def _line_kind(line: str) -> str:
    if line.startswith(("+++", "---", "diff ", "index ")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "ctx")


@guarded(page=True)
async def session(request: Request) -> Response:
    """The session file an attempt's agent left (the latest attempt's that kept one), as
    fleetd keeps it: masked like every event, under <state>/sessions/."""
    web = web_of(request)
    reply = await web.control.ask(m.ShowTask(task=task_id(request)))
    assert isinstance(reply, m.TaskDetail)
    kept = [e.result.session_file for e in reply.task.executions if e.result is not None]
    path = next((Path(p) for p in reversed(kept) if p), None)
    root = web.sessions_dir.resolve()
    if path is None or not path.resolve().is_relative_to(root) or not path.is_file():
        return error_page(request, 404, f"task {reply.task.id} kept no session file")
    return FileResponse(path, media_type="application/x-ndjson", filename=path.name)


@guarded(mutating=True, page=True)
async def enqueue(request: Request) -> Response:
    form = await request.form()
    spec = _spec_of(form)
    reply = await web_of(request).control.ask(m.Enqueue(tasks=specs_of(msgspec.json.encode(spec))))
    assert isinstance(reply, m.Enqueued)
    return RedirectResponse(f"/tasks/{reply.ids[0]}", status_code=303)


def _spec_of(form: FormData) -> dict[str, Any]:
    """The enqueue form's fields as a task spec (the names of `fleetctl enqueue`'s flags)."""
    spec: dict[str, Any] = {}
    for name in ("prompt", "agent", "repo", "ref", "model", "sandbox", "reasoning_effort", "key"):
        value = str(form.get(name) or "").strip()
        if value:
            spec[name] = value
    spec.setdefault("prompt", "")
    for name in ("timeout", "idle_timeout", "max_attempts"):
        value = str(form.get(name) or "").strip()
        if value:
            try:
                spec[name] = int(value) if name == "max_attempts" else float(value)
            except ValueError:
                raise BadQuery(
                    f"{name.replace('_', ' ')} must be a number, not {value!r}"
                ) from None
    argv = str(form.get("argv") or "").split()
    if argv:
        spec["argv"] = argv
    labels = [item.strip() for item in str(form.get("labels") or "").split(",") if item.strip()]
    if labels:
        if any("=" not in item for item in labels):
            raise BadQuery("labels are K=V, separated by commas")
        spec["labels"] = dict(item.split("=", 1) for item in labels)
    return spec


@guarded(mutating=True, page=True)
async def cancel(request: Request) -> Response:
    task = task_id(request)
    await web_of(request).control.ask(m.CancelTask(task=task))
    return RedirectResponse(f"/tasks/{task}", status_code=303)


@guarded(mutating=True, page=True)
async def retry(request: Request) -> Response:
    task = task_id(request)
    resume = (await request.form()).get("resume") == "1"
    await web_of(request).control.ask(m.RetryTask(task=task, resume=resume))
    return RedirectResponse(f"/tasks/{task}", status_code=303)


@guarded(mutating=True, page=True)
async def drain(request: Request) -> Response:
    await web_of(request).control.ask(m.Drain())
    return RedirectResponse("/", status_code=303)


@guarded(mutating=True, page=True)
async def stop(request: Request) -> Response:
    await web_of(request).control.ask(m.Stop())
    return render(request, "error.html", status=200, message="fleetd is stopping.")  # not an error


def routes() -> list[BaseRoute]:
    return [
        Route("/", overview),
        Route("/login", login),
        Route("/tasks", tasks),
        Route("/tasks/{task}", task),
        Route("/tasks/{task}/diff", diff),
        Route("/tasks/{task}/session", session),
        Route("/actions/enqueue", enqueue, methods=["POST"]),
        Route("/tasks/{task}/cancel", cancel, methods=["POST"]),
        Route("/tasks/{task}/retry", retry, methods=["POST"]),
        Route("/actions/drain", drain, methods=["POST"]),
        Route("/actions/stop", stop, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
