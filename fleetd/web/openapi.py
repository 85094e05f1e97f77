"""The API's OpenAPI 3.1 document, `/api/v1/openapi.json`; the task spec's schema comes from
its msgspec struct, so that the document and the decoder cannot disagree."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from fleetd.web.logic import AGENT_PATTERN
from shared.models import TASK_STATES, TaskSpec

_ERROR = {"$ref": "#/components/responses/Error"}
_TASK_ID = {
    "name": "task",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
}


def _ok(description: str, schema: dict[str, Any], media: str = "application/json") -> Any:
    return {"description": description, "content": {media: {"schema": schema}}}


def _get(summary: str, ok: Any, parameters: list[Any] | None = None) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters or [],
            "responses": {"200": ok, "400": _ERROR, "401": _ERROR, "404": _ERROR, "503": _ERROR},
        }
    }


def _post(summary: str, ok: Any, code: str = "200", **extra: Any) -> dict[str, Any]:
    responses = {code: ok, "400": _ERROR, "401": _ERROR, "403": _ERROR, "404": _ERROR}
    responses["503"] = _ERROR
    return {"post": {"summary": summary, "responses": responses, **extra}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    (spec,), components = msgspec.json.schema_components(
        [TaskSpec], ref_template="#/components/schemas/{name}"
    )
    obj = {"type": "object"}
    task_path = [_TASK_ID]
    list_params = [
        {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(TASK_STATES)}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "agent", "in": "query", "schema": {"type": "string", "pattern": AGENT_PATTERN}},
        {"name": "repo", "in": "query", "schema": {"type": "string"}},
        {"name": "label", "in": "query", "schema": {"type": "string", "pattern": "^[^=]+=.*$"}},
        {"name": "search", "in": "query", "schema": {"type": "string"}},
    ]
    body = {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [spec, {"type": "array", "items": spec}]}}
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agent-fleet",
            "version": "1",
            "description": "The objects `fleetctl --json` prints. Send the token of "
            "`fleetctl dashboard --json` as `Authorization: Bearer TOKEN`.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/status": _get("fleetctl status --json", _ok("the fleet", obj)),
            "/api/v1/workers": _get(
                "fleetctl workers --json", _ok("workers", {"type": "array", "items": obj})
            ),
            "/api/v1/tasks": {
                **_get(
                    "fleetctl list --json (newest first; the Link header pages on)",
                    _ok("tasks", {"type": "array", "items": obj}),
                    list_params,
                ),
                **_post(
                    "fleetctl enqueue --json: one task spec or a list",
                    _ok("ids", {"type": "array", "items": obj}),
                    "201",
                    requestBody=body,
                ),
            },
            "/api/v1/tasks/{task}": _get("fleetctl show --json", _ok("the task", obj), task_path),
            "/api/v1/tasks/{task}/events": _get(
                "fleetctl events --json (JSON lines), or live SSE with Accept: text/event-stream "
                "(view=page: of a large batch only the newest events, after a `skipped` count)",
                _ok("events", {"type": "string"}, "application/x-ndjson"),
                [*task_path, {"name": "view", "in": "query", "schema": {"enum": ["page"]}}],
            ),
            "/api/v1/tasks/{task}/diff": _get(
                "fleetctl diff --json",
                _ok("the committed patch", obj),
                [*task_path, {"name": "execution", "in": "query", "schema": {"type": "integer"}}],
            ),
            "/api/v1/tasks/{task}/cancel": _post(
                "fleetctl cancel --json", _ok("the task's state", obj), parameters=task_path
            ),
            "/api/v1/tasks/{task}/retry": _post(
                "fleetctl retry --json",
                _ok("the task's state", obj),
                parameters=[
                    *task_path,
                    {"name": "resume", "in": "query", "schema": {"type": "boolean"}},
                ],
            ),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": _ok(
                    "what went wrong and what to do",
                    {
                        "type": "object",
                        "required": ["error", "message"],
                        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                    },
                )
            },
        },
    }
