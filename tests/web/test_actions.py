"""The overview's fleet-wide actions through the browser's way in (the login cookie and the
page's CSRF token): drain and stop end fleetd as `fleetctl drain` and `stop` do."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.support.web import printing_agent, web_fleet

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("action", ["drain", "stop"])
def test_drain_and_stop_from_the_overview(action: str) -> None:
    with web_fleet() as web:
        running = web.enqueue(printing_agent("{}", then_wait=60 if action == "stop" else 1))
        web.fleet.wait_state(running, "running")
        with httpx.Client(base_url=web.url, timeout=30, follow_redirects=True) as browser:
            overview = browser.get("/login", params={"token": web.token})
            csrf = overview.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            assert browser.post(f"/actions/{action}").status_code == 403  # no CSRF token
            assert web.fleet.proc is not None and web.fleet.proc.poll() is None
            done = browser.post(f"/actions/{action}", data={"csrf": csrf})
            assert done.status_code == 200
        assert web.fleet.wait_exit(60) == 0
        web.fleet.start()  # the same state directory: the task is where the action left it
        first = web.fleet.show(running)["executions"][0]["outcome"]
        # Drain let the run finish; stop ended it and put its task back, no attempt spent.
        assert first == ("succeeded" if action == "drain" else "interrupted")


def test_the_overview_shows_each_limit_in_use(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text('[limits]\n"label:team=web" = 1\n')
    with web_fleet(env={**os.environ, "FLEET_CONFIG": str(config)}) as web:
        running = web.enqueue(printing_agent("{}", then_wait=60), labels={"team": "web"})
        web.fleet.wait_state(running, "running")
        page = web.api.get("/").text
        assert "limit label:team=web: 1 of 1 running (full)" in page
