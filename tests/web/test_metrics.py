"""`/metrics` parsed with prometheus-client's own parser, checked against `fleetctl status
--json`, and unchanged by a restart of the web process (its counters live elsewhere)."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fleet import wait_for
from tests.support.web import codex_line, printing_agent, web_fleet

pytestmark = pytest.mark.timeout(180)

SECRET = "sk-metrics-secret-value-42"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = httpx.get(url + "/metrics", timeout=30)  # open on loopback: no token
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_match_the_status_and_survive_a_web_restart() -> None:
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    with web_fleet(env=env) as web:
        usage = {"input_tokens": 7, "cached_input_tokens": 0, "output_tokens": 3}
        lines = [
            codex_line({"type": "agent_message", "text": f"label me {SECRET}"}),
            '{"type": "turn.completed", "usage": ' + str(usage).replace("'", '"') + "}",
        ]
        done = [web.enqueue(printing_agent(*lines), prompt="/secret/path", labels={"k": "v"})]
        done.append(web.enqueue(["sh", "-c", "exit 3"], max_attempts=1))
        for task in done:
            wait_for(lambda t=task: web.fleet.show(t)["state"] in ("succeeded", "failed"), 60)
        status = web.fleet.json("status")
        samples = scrape(web.url)
        for state, count in status["counts"].items():
            assert samples[("agent_fleet_tasks", (("state", state),))] == count
        idle = sum(w["state"] == "idle" for w in status["workers"])
        assert samples[("agent_fleet_workers", (("state", "idle"),))] == idle
        runs = {k[1]: v for k, v in samples.items() if k[0] == "agent_fleet_runs_total"}
        assert runs == {
            (("agent", "command"), ("outcome", "succeeded")): 1,
            (("agent", "command"), ("outcome", "failed")): 1,
        }
        events = sum(len(web.fleet.events(task)) for task in done)
        assert samples[("agent_fleet_events_total", ())] == events
        count = samples[("agent_fleet_run_duration_seconds_count", (("agent", "command"),))]
        assert count == 2
        assert samples[("agent_fleet_dispatch_latency_seconds_count", ())] == 2
        assert ("agent_fleet_queue_oldest_seconds", ()) in samples
        text = httpx.get(web.url + "/metrics", timeout=30).text
        for private in (SECRET, "/secret/path", '"v"', "label me"):
            assert private not in text

        web_process = next(p for p in status["processes"] if p["role"] == "web")
        os.kill(web_process["pid"], signal.SIGKILL)
        wait_for(
            lambda: any(
                p["role"] == "web" and p["alive"] and p["restarts"] == 1
                for p in web.fleet.json("status")["processes"]
            ),
            30,
            what="the web process back",
        )
        after = wait_for(lambda: _scrape_or_none(web.url), 30, what="/metrics back")
        for key, value in samples.items():
            if key[0] in ("agent_fleet_runs_total", "agent_fleet_events_total"):
                assert after[key] == value, key
        assert after[("agent_fleet_process_restarts_total", (("role", "web"),))] == 1


def _scrape_or_none(url: str) -> dict | None:
    try:
        return scrape(url)
    except (httpx.HTTPError, AssertionError):
        return None
