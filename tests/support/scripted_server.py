"""What the tests' scripted model endpoints share: a loopback HTTP server in a thread that
answers each request with the next scripted turn, per route, and records what it received.

`ModelServer` (OpenAI Responses, for Codex) and `AnthropicServer` (Anthropic Messages, for
Claude Code) differ only in how a turn is rendered and how a request's user texts are found.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Generic, TypeVar

TurnT = TypeVar("TurnT")
ServerT = TypeVar("ServerT", bound="ScriptedServer[Any]")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    route: str | None = None


def content_texts(content: Any) -> list[str]:
    """The texts of one message's content, as both APIs give it: a string, or a list of parts
    of which those with a `text` count."""
    if isinstance(content, str):
        return [content]
    parts = content if isinstance(content, list) else []
    return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]


@dataclass
class _Route(Generic[TurnT]):
    """Turns served to requests whose user messages contain `needle`."""

    needle: str
    turns: deque[TurnT] = field(default_factory=deque)


class ScriptedServer(Generic[TurnT]):
    """Requests are answered from the first route whose needle occurs in a user message of the
    request (see `route`), else from the default script (see `script`). Each queue is consumed
    one turn per request, so one agent run per route is deterministic even when several runs
    are in flight. An exhausted queue answers `done_turn()`.

    A subclass names its request handler (`handler`, which finds this server as
    `self.scripted`), how a request body's user texts are found and the turn that ends a run.
    """

    handler: type[BaseHTTPRequestHandler]
    user_texts: Callable[[Any], list[str]]

    def __init__(self) -> None:
        """Create a stopped server."""
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._default: deque[TurnT] = deque()
        self._routes: list[_Route[TurnT]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def done_turn(self) -> TurnT:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._httpd.server_address[1])

    def script(self, turns: list[TurnT]) -> None:
        """Replace the default queue of turns."""
        with self._lock:
            self._default = deque(turns)

    def route(self, needle: str, turns: list[TurnT]) -> None:
        """Serve `turns` to requests whose user messages contain `needle`."""
        with self._lock:
            self._routes.append(_Route(needle, deque(turns)))

    def next_turn(self, body: Any) -> tuple[str | None, TurnT]:
        """Pop the turn answering a request body, with the matched route's needle."""
        texts = type(self).user_texts(body)
        with self._lock:
            for route in self._routes:
                if any(route.needle in text for text in texts):
                    return route.needle, self._pop(route.turns)
            return None, self._pop(self._default)

    def _pop(self, turns: deque[TurnT]) -> TurnT:
        return turns.popleft() if turns else self.done_turn()

    def record(self, request: RecordedRequest) -> None:
        """Append a request to `requests`."""
        with self._lock:
            self.requests.append(request)

    def start(self: ServerT) -> ServerT:
        """Bind an ephemeral loopback port and serve in a daemon thread."""
        handler = type("_BoundHandler", (self.handler,), {"scripted": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self: ServerT) -> ServerT:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
