"""The application's edges without a fleet: a route that fails unexpectedly answers a typed
500 (JSON for the API, a page otherwise) and logs the traceback, which no client sees."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq.asyncio
from loguru import logger
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from fleetd.web.app import Web, build_app, guarded, templates
from fleetd.web.control import Control
from fleetd.web.logic import Access

TOKEN = "unit-token"


@guarded()
async def broken(request: Request):
    raise ValueError("a bug with a secret-ish detail")


@pytest.fixture
def client(tmp_path: Path):
    context = zmq.asyncio.Context()
    web = Web(
        control=Control(context, tmp_path / "none.sock", 0.1),
        context=context,
        access=Access(TOKEN),
        feed_endpoint="ipc://" + str(tmp_path / "feed"),
        metrics_open=True,
        templates=templates(),
        sessions_dir=tmp_path / "sessions",
        state_dir=tmp_path,
    )
    app = build_app(web, [Route("/api/v1/broken", broken), Route("/broken", broken)])
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    context.destroy(linger=0)


def test_an_unexpected_failure_is_a_typed_500_and_a_logged_traceback(client) -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="ERROR", format="{message}\n{exception}")
    try:
        api = client.get("/api/v1/broken", headers={"authorization": f"Bearer {TOKEN}"})
        page = client.get("/broken", headers={"authorization": f"Bearer {TOKEN}"})
    finally:
        logger.remove(sink)
    assert api.status_code == 500
    assert api.json() == {
        "error": "internal",
        "message": "the dashboard failed on this request; see the fleetd log",
    }
    assert page.status_code == 500 and "see the fleetd log" in page.text
    for reply in (api, page):
        assert "Traceback" not in reply.text and "secret-ish" not in reply.text
    assert any("ValueError: a bug with a secret-ish detail" in line for line in lines)


def test_without_the_token_the_route_is_not_run(client) -> None:
    assert client.get("/api/v1/broken").status_code == 401
