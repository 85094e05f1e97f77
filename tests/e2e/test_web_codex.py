"""The dashboard on a real Codex run (the tests' loopback model): the task page links the
session file fleetd kept, and the link serves it, to the token holder only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.codex_fleet import TERMINAL, enqueue_codex, fleet_env, workdir
from tests.support.model_server import ModelServer
from tests.support.requires import needs_codex
from tests.support.web import WebFleet, web_fleet

pytestmark = [*needs_codex(), pytest.mark.timeout(120)]


def test_the_task_page_links_the_kept_session_file(tmp_path: Path, server: ModelServer) -> None:
    server.route("[web-session]", [server.message("Done here")])
    with web_fleet(env=fleet_env(tmp_path, server)) as web:
        task = enqueue_codex(web.fleet, "[web-session] say done", workdir(tmp_path, "w"))
        shown = web.fleet.wait_state(task, *TERMINAL, timeout=60)
        assert shown["state"] == "succeeded", shown
        kept = Path(shown["result"]["session_file"])
        page = web.api.get(f"/tasks/{task}")
        assert f'href="/tasks/{task}/session"' in page.text
        served = web.api.get(f"/tasks/{task}/session")
        assert served.status_code == 200
        assert served.content == kept.read_bytes() and b"[web-session]" in served.content
        assert web.anonymous.get(f"/tasks/{task}/session").status_code == 401
        _no_session_for_a_command_task(web)


def _no_session_for_a_command_task(web: WebFleet) -> None:
    task = web.enqueue(["true"])
    web.fleet.wait_state(task, *TERMINAL, timeout=60)
    missing = web.api.get(f"/tasks/{task}/session")
    assert missing.status_code == 404 and "kept no session file" in missing.text
