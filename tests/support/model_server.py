"""Scripted fake of the OpenAI Responses API (`POST /v1/responses`) for tests."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.scripted_server import RecordedRequest, ScriptedServer, content_texts

_ids = itertools.count(1)


def _next_id(prefix: str) -> str:
    """Return a process-unique id such as `msg_7`."""
    return f"{prefix}_{next(_ids)}"


@dataclass(frozen=True)
class Turn:
    """One scripted model reply: output items over SSE, or an HTTP error."""

    items: tuple[dict[str, Any], ...] = ()
    input_tokens: int = 20
    output_tokens: int = 10
    status: int = 200
    body: str = ""


def user_texts(body: Any) -> list[str]:
    """Return the texts of all user-role messages in a Responses request body."""
    texts: list[str] = []
    items = body.get("input", []) if isinstance(body, dict) else []
    for item in items if isinstance(items, list) else []:
        if item.get("type", "message") == "message" and item.get("role") == "user":
            texts += content_texts(item.get("content"))
    return texts


def function_call_outputs(body: Any) -> list[dict[str, Any]]:
    """Return the `function_call_output` items of a Responses request body."""
    items = body.get("input", []) if isinstance(body, dict) else []
    return [i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"]


def _sse(event: str, data: dict[str, Any]) -> str:
    """Format one server-sent event."""
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n"


def sse_body(turn: Turn) -> bytes:
    """Render a successful turn as the SSE stream codex expects."""
    response_id = _next_id("resp")
    usage = {
        "input_tokens": turn.input_tokens,
        "input_tokens_details": None,
        "output_tokens": turn.output_tokens,
        "output_tokens_details": None,
        "total_tokens": turn.input_tokens + turn.output_tokens,
    }
    events = [_sse("response.created", {"response": {"id": response_id}})]
    events += [_sse("response.output_item.done", {"item": item}) for item in turn.items]
    events.append(_sse("response.completed", {"response": {"id": response_id, "usage": usage}}))
    return "".join(events).encode()


class ModelServer(ScriptedServer[Turn]):
    """Loopback HTTP server replaying scripted turns to Responses API clients (Codex); an
    exhausted queue answers `message("done")`."""

    handler: type[BaseHTTPRequestHandler]  # _Handler, set below
    user_texts = staticmethod(user_texts)

    def done_turn(self) -> Turn:
        return self.message("done")

    @staticmethod
    def message(text: str, input_tokens: int = 20, output_tokens: int = 10) -> Turn:
        """Turn with one assistant message ending the codex turn."""
        item = {
            "type": "message",
            "role": "assistant",
            "id": _next_id("msg"),
            "content": [{"type": "output_text", "text": text}],
        }
        return Turn(items=(item,), input_tokens=input_tokens, output_tokens=output_tokens)

    @staticmethod
    def shell(cmd: str, call_id: str | None = None, yield_time_ms: int = 10000) -> Turn:
        """Turn with one `exec_command` function call running `cmd`."""
        arguments = {"cmd": cmd, "login": False, "yield_time_ms": yield_time_ms}
        item = {
            "type": "function_call",
            "id": _next_id("fc"),
            "call_id": call_id or _next_id("call"),
            "name": "exec_command",
            "arguments": json.dumps(arguments),
        }
        return Turn(items=(item,))

    @staticmethod
    def http_error(status: int, body: str = "error") -> Turn:
        """Turn answered with a plain-text HTTP error."""
        return Turn(status=status, body=body)

    @property
    def base_url(self) -> str:
        """Provider base URL, e.g. `http://127.0.0.1:PORT/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"


class _Handler(BaseHTTPRequestHandler):
    """Request handler; `scripted` is bound by `ModelServer.start`."""

    scripted: ModelServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Record and answer 404: codex needs no GET endpoint."""
        self._record(None, None)
        self._send(404, "text/plain", b"not found")

    def do_POST(self) -> None:
        """Answer `/responses` from the script; anything else gets 404."""
        body = self._read_json()
        if not self.path.rstrip("/").endswith("/responses"):
            self._record(body, None)
            self._send(404, "text/plain", b"not found")
            return
        needle, turn = self.scripted.next_turn(body)
        self._record(body, needle)
        if turn.status != 200:
            self._send(turn.status, "text/plain", turn.body.encode())
        else:
            self._send(200, "text/event-stream", sse_body(turn))

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _read_json(self) -> Any:
        """Read and parse the request body; raw text if it is not JSON."""
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode(errors="replace")

    def _record(self, body: Any, needle: str | None) -> None:
        """Store this request on the server."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RecordedRequest(self.command, self.path, headers, body, needle)
        self.scripted.record(request)

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        """Send a complete response and close the connection."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True


ModelServer.handler = _Handler
