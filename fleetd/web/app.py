"""The web process's Starlette application: what every route shares (the supervisor, the
access checks, errors as JSON or as a page) and the routes themselves, from api.py,
pages.py and metrics.py."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import zmq.asyncio
from jinja2 import Environment, PackageLoader, select_autoescape
from loguru import logger
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute

from fleetd.web.control import Control
from fleetd.web.logic import HTTP_STATUS, Access, BadQuery, Verdict, same_origin
from shared.errors import DaemonUnavailable, FleetError, RequestFailed

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class Web:
    """What the routes share; one per web process (kept on `app.state.web`)."""

    control: Control
    context: zmq.asyncio.Context
    access: Access
    feed_endpoint: str
    metrics_open: bool  # /metrics without the token (loopback, or web.metrics_auth off)
    templates: Environment
    sessions_dir: Path  # the kept agent session files (the only files the web role serves)
    state_dir: Path  # for the tracker's status file: a task's issue and pull request


def web_of(request: Request) -> Web:
    return request.app.state.web


_json = msgspec.json.Encoder()


class FastJSON(JSONResponse):
    """JSON through msgspec (the shapes fleetctl prints, byte for byte the same encoder)."""

    def render(self, content: Any) -> bytes:
        return _json.encode(content)


def error_json(status: int, code: str, message: str) -> Response:
    return FastJSON({"error": code, "message": message}, status_code=status)


def error_page(request: Request, status: int, message: str) -> Response:
    template = web_of(request).templates.get_template("error.html")
    return HTMLResponse(template.render(status=status, message=message), status_code=status)


def guarded(*, mutating: bool = False, page: bool = False) -> Callable[[Endpoint], Endpoint]:
    """An endpoint that needs the token (Bearer, or the login cookie; a mutating one with a
    cookie needs the CSRF token as well), whose control errors become JSON (or a page) with
    the status fleetctl's exit code means."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guard(request: Request) -> Response:
            web = web_of(request)
            verdict = web.access.verdict(request.headers, request.cookies)
            if verdict is Verdict.DENIED:
                if page:
                    return error_page(request, 401, "not_logged_in")
                return error_json(
                    401,
                    "unauthorized",
                    "send the token as `Authorization: Bearer TOKEN`; "
                    "`fleetctl dashboard --json` prints it",
                )
            if mutating:
                given = request.headers.get("x-csrf-token")
                if given is None and verdict is Verdict.COOKIE:
                    form = await request.form()
                    field = form.get("csrf")
                    given = field if isinstance(field, str) else None
                if not web.access.may_change(verdict, given, same_origin(request.headers)):
                    message = "refused: this change lacks the dashboard's CSRF token"
                    if page:
                        return error_page(request, 403, message)
                    return error_json(403, "csrf", message)
            try:
                return await endpoint(request)
            except BadQuery as exc:
                return _failed(request, page, 400, "bad_request", str(exc))
            except RequestFailed as exc:
                status = HTTP_STATUS.get(exc.code, 500)
                return _failed(request, page, status, exc.code, str(exc))
            except DaemonUnavailable as exc:
                return _failed(request, page, 503, "unavailable", str(exc))
            except FleetError as exc:
                return _failed(request, page, 500, "internal", str(exc))

        return guard

    return wrap


def _failed(request: Request, page: bool, status: int, code: str, message: str) -> Response:
    if page:
        return error_page(request, status, message)
    return error_json(status, code, message)


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("fleetd.web", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


async def _unexpected(request: Request, exc: Exception) -> Response:
    """Whatever a route did not expect: logged with its traceback, never sent to the client."""
    logger.opt(exception=exc).error("{} {} failed", request.method, request.url.path)
    message = "the dashboard failed on this request; see the fleetd log"
    if request.url.path.startswith("/api/"):
        return error_json(500, "internal", message)
    return error_page(request, 500, message)


def build_app(web: Web, routes: list[BaseRoute]) -> Starlette:
    app = Starlette(routes=routes, exception_handlers={Exception: _unexpected})
    app.state.web = web
    return app


STATIC_DIR = Path(__file__).parent / "static"
