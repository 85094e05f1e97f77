"""A real fleetd with its dashboard on a free loopback port, and an HTTP client for it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from tests.support.fleet import Fleet, running_fleet


def codex_line(item: dict[str, Any]) -> str:
    return json.dumps({"type": "item.completed", "item": item})


def printing_agent(*lines: str, pause: float = 0.0, then_wait: float = 0.0) -> list[str]:
    """A command agent's argv that prints `lines` (pausing between them), then waits."""
    script = "".join(f"printf '%s\\n' {_quote(line)}; sleep {pause}; " for line in lines)
    return ["sh", "-c", script + f"sleep {then_wait}"]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class WebFleet:
    """The fleet, its dashboard's URL and token, and a client that sends the token."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        status = fleet.status()
        assert status.web_url is not None, "fleetd started without its dashboard"
        self.url = status.web_url.rstrip("/")
        shown = fleet.json("dashboard")
        self.token: str = shown["token"]
        self.api = httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {self.token}"}, timeout=30
        )
        self.anonymous = httpx.Client(base_url=self.url, timeout=30)

    def close(self) -> None:
        self.api.close()
        self.anonymous.close()

    def enqueue(self, argv: list[str], prompt: str = "p", **spec: Any) -> int:
        reply = self.api.post(
            "/api/v1/tasks", json={"prompt": prompt, "agent": "command", "argv": argv, **spec}
        )
        assert reply.status_code == 201, reply.text
        return int(reply.json()[0]["id"])


@contextlib.contextmanager
def web_fleet(*args: str, env: Mapping[str, str] | None = None) -> Iterator[WebFleet]:
    environment = dict(os.environ if env is None else env)
    environment["FLEET_WEB_LISTEN"] = "127.0.0.1:0"
    with running_fleet("--workers", "2", *args, env=environment) as fleet:
        web = WebFleet(fleet)
        try:
            yield web
        finally:
            web.close()
