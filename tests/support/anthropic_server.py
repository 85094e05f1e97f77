"""Scripted fake of the Anthropic Messages API (`POST /v1/messages`) for the Claude Code tests.

Claude Code streams: each reply is Server-Sent Events `message_start`, `content_block_start`,
`content_block_delta`..., `content_block_stop`, `message_delta` (stop reason and usage) and
`message_stop`. Requests whose user messages hold a route's needle get that route's turns;
others get the default script; an exhausted queue answers with the text "done".
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.scripted_server import RecordedRequest, ScriptedServer, content_texts

_ids = itertools.count(1)


@dataclass(frozen=True)
class Turn:
    """One scripted reply: content blocks over SSE, an HTTP error, or a stream cut short."""

    blocks: tuple[dict[str, Any], ...] = ()
    input_tokens: int = 20
    output_tokens: int = 10
    status: int = 200
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    cut: bool = False  # close the connection in the middle of the stream


def user_texts(body: Any) -> list[str]:
    """The texts of the user messages (and their tool results) of a Messages request body."""
    texts: list[str] = []
    messages = body.get("messages", []) if isinstance(body, dict) else []
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "user":
            texts += content_texts(message.get("content"))
    return texts


def tool_results(body: Any) -> list[dict[str, Any]]:
    """The `tool_result` blocks of a Messages request body."""
    found = []
    for message in body.get("messages", []) if isinstance(body, dict) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "tool_result":
                found.append(part)
    return found


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()


def sse_events(turn: Turn, model: str) -> list[bytes]:
    """A successful turn as the SSE events of one streamed message."""
    tool_use = any(block["type"] == "tool_use" for block in turn.blocks)
    message = {
        "id": f"msg_{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": turn.input_tokens, "output_tokens": 1},
    }
    events = [_sse("message_start", {"message": message})]
    for index, block in enumerate(turn.blocks):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events.append(_sse("content_block_start", {"index": index, "content_block": start}))
        events.append(_sse("content_block_delta", {"index": index, "delta": delta}))
        events.append(_sse("content_block_stop", {"index": index}))
    stop = {"stop_reason": "tool_use" if tool_use else "end_turn", "stop_sequence": None}
    usage = {"output_tokens": turn.output_tokens}
    events.append(_sse("message_delta", {"delta": stop, "usage": usage}))
    events.append(_sse("message_stop", {}))
    return events


def json_message(turn: Turn, model: str) -> dict[str, Any]:
    """A turn as a non-streamed Messages response."""
    tool_use = any(block["type"] == "tool_use" for block in turn.blocks)
    return {
        "id": f"msg_{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(turn.blocks),
        "stop_reason": "tool_use" if tool_use else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens},
    }


class AnthropicServer(ScriptedServer[Turn]):
    """Loopback HTTP server replaying scripted turns to Claude Code."""

    handler: type[BaseHTTPRequestHandler]  # _Handler, set below
    user_texts = staticmethod(user_texts)

    def done_turn(self) -> Turn:
        return self.text("done")

    @staticmethod
    def text(text: str, input_tokens: int = 20, output_tokens: int = 10) -> Turn:
        return Turn(
            blocks=({"type": "text", "text": text},),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    @staticmethod
    def bash(command: str) -> Turn:
        """A `Bash` tool call running `command`."""
        block = {
            "type": "tool_use",
            "id": f"toolu_{next(_ids):04d}",
            "name": "Bash",
            "input": {"command": command, "description": "run the task's command"},
        }
        return Turn(blocks=(block,))

    @staticmethod
    def http_error(status: int, error_type: str, message: str, **headers: str) -> Turn:
        body = json.dumps({"type": "error", "error": {"type": error_type, "message": message}})
        return Turn(status=status, body=body, headers=tuple(headers.items()))

    @staticmethod
    def cut_stream() -> Turn:
        return Turn(blocks=({"type": "text", "text": "half a thought"},), cut=True)

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT` (Claude Code appends `/v1/messages` itself)."""
        return f"http://127.0.0.1:{self.port}"


class _Handler(BaseHTTPRequestHandler):
    scripted: AnthropicServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `requests` instead."""

    def do_HEAD(self) -> None:
        self._plain(200, b"")

    def do_GET(self) -> None:
        self._plain(404, b'{"type":"error","error":{"type":"not_found_error","message":"no"}}')

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        script = self.scripted
        if not path.endswith("/v1/messages"):
            script.record(RecordedRequest(self.command, path, dict(self.headers.items()), body))
            self._plain(200, b'{"input_tokens": 10}' if "count_tokens" in path else b"{}")
            return
        needle, turn = script.next_turn(body)
        script.record(RecordedRequest(self.command, path, dict(self.headers.items()), body, needle))
        model = body.get("model", "claude-test") if isinstance(body, dict) else "claude-test"
        if turn.status != 200:
            self._plain(turn.status, turn.body.encode(), turn.headers)
        elif isinstance(body, dict) and body.get("stream"):
            self._stream(sse_events(turn, model), turn.cut)
        elif turn.cut:
            self._cut_body(json.dumps(json_message(turn, model)).encode())
        else:
            self._plain(200, json.dumps(json_message(turn, model)).encode())

    def _plain(self, status: int, data: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _cut_body(self, data: bytes) -> None:
        """Half a JSON reply, then the connection closes."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    def _stream(self, events: list[bytes], cut: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        if cut:
            # A length the stream never reaches: the client sees the connection end early.
            self.send_header("Content-Length", str(10**6))
            events = events[:3]
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(event)
            self.wfile.flush()
        self.close_connection = True


AnthropicServer.handler = _Handler
