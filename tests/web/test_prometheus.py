"""A real Prometheus (Debian's) scrapes the fleet: its target is up and the values it stored
are the fleet's."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fleet import wait_for
from tests.support.requires import needs_tools
from tests.support.web import WebFleet, web_fleet

pytestmark = [pytest.mark.timeout(180), needs_tools("prometheus")]


def free_port() -> int:
    # Prometheus takes no port 0 (it would not say which it got): a port free a moment ago.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[WebFleet, str]]:
    with web_fleet() as web:
        target = web.url.removeprefix("http://")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: agent-fleet\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        address = f"127.0.0.1:{free_port()}"
        log = (tmp_path / "prometheus.log").open("wb")
        server = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={address}",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        try:
            yield web, f"http://{address}"
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
            log.close()


def query(prometheus_url: str, expression: str) -> list[dict] | None:
    try:
        reply = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expression})
    except httpx.HTTPError:
        return None
    if reply.status_code != 200:
        return None
    return reply.json()["data"]["result"] or None


def test_prometheus_scrapes_the_fleet(prometheus: tuple[WebFleet, str]) -> None:
    web, url = prometheus
    task = web.enqueue(["true"], prompt="scraped")
    wait_for(lambda: web.fleet.show(task)["state"] == "succeeded", 60, what="the task")
    up = wait_for(lambda: query(url, 'up{job="agent-fleet"}'), 60, what="a first scrape")
    assert up[0]["value"][1] == "1"
    counted = wait_for(
        lambda: query(url, 'agent_fleet_tasks{state="succeeded"} >= 1'), 60, what="the task"
    )
    assert float(counted[0]["value"][1]) == web.fleet.json("status")["counts"]["succeeded"]
    runs = wait_for(
        lambda: query(url, 'agent_fleet_runs_total{agent="command",outcome="succeeded"}'), 30
    )
    assert float(runs[0]["value"][1]) == 1
