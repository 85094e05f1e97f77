"""The HTTP API through real HTTP against a real fleetd: the same objects as `fleetctl
--json`, the token, the login cookie and CSRF, errors with fleetctl's meanings, SSE."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from shared.tracker import TaskLink, TrackerStatus, status_file
from tests.support.fleet import wait_for
from tests.support.gitrepo import new_repo
from tests.support.web import WebFleet, codex_line, printing_agent, web_fleet

pytestmark = pytest.mark.timeout(180)

HELLO = codex_line({"type": "agent_message", "text": "hello"})


@pytest.fixture(scope="module")
def web() -> Iterator[WebFleet]:
    with web_fleet() as started:
        yield started


def finished(web: WebFleet, task: int) -> dict:
    return wait_for(
        lambda: (
            (shown := web.api.get(f"/api/v1/tasks/{task}").json())["state"]
            not in ("queued", "running")
            and shown
        ),
        60,
        what=f"task {task} to finish",
    )


def test_every_call_needs_the_token(web: WebFleet) -> None:
    for path in ("/api/v1/status", "/api/v1/tasks", "/api/v1/tasks/1", "/api/v1/openapi.json"):
        reply = web.anonymous.get(path)
        assert reply.status_code == 401, path
        assert "Authorization: Bearer" in reply.json()["message"]
    wrong = web.anonymous.get("/api/v1/status", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    page = web.anonymous.get("/")
    assert page.status_code == 401 and "fleetctl dashboard" in page.text
    assert web.anonymous.post("/api/v1/tasks", json={"prompt": "x"}).status_code == 401


def test_the_api_serves_what_fleetctl_json_prints(web: WebFleet) -> None:
    task = web.enqueue(printing_agent(HELLO, "plain text"), prompt="mirror me")
    shown = finished(web, task)
    assert shown == web.fleet.json("show", str(task))
    assert web.api.get("/api/v1/tasks", params={"limit": 5}).json() == web.fleet.json(
        "list", "--limit", "5"
    )
    lines = web.api.get(f"/api/v1/tasks/{task}/events").text.splitlines()
    assert [json.loads(line) for line in lines] == web.fleet.events(task)
    assert [e["payload"] for e in web.fleet.events(task)][:2] == [json.loads(HELLO), "plain text"]
    assert web.api.get("/api/v1/workers").json() == web.fleet.json("workers")
    status, shown_status = web.api.get("/api/v1/status").json(), web.fleet.json("status")
    assert status.keys() == shown_status.keys()
    assert status["counts"] == shown_status["counts"]
    assert status["web_url"] == web.url + "/"
    retried = web.api.post(f"/api/v1/tasks/{task}/retry")
    assert retried.status_code == 200
    assert retried.json() == {"id": task, "state": "queued", "resume": False}


def test_pages_of_tasks_follow_the_link_header(web: WebFleet) -> None:
    ids = [web.enqueue(["true"], prompt=f"page {n}") for n in range(5)]
    first = web.api.get("/api/v1/tasks", params={"limit": 2})
    assert [t["id"] for t in first.json()] == sorted(ids, reverse=True)[:2]
    following = first.links["next"]["url"]
    second = web.api.get(following)
    assert [t["id"] for t in second.json()] == sorted(ids, reverse=True)[2:4]


def test_errors_are_json_with_fleetctls_meanings(web: WebFleet) -> None:
    missing = web.api.get("/api/v1/tasks/987654")
    assert missing.status_code == 404 and "fleetctl list" in missing.json()["message"]
    assert web.api.post("/api/v1/tasks/987654/cancel").status_code == 404
    bad_state = web.api.get("/api/v1/tasks", params={"state": "sleeping"})
    assert bad_state.status_code == 400 and "queued" in bad_state.json()["message"]
    assert web.api.get("/api/v1/tasks/abc").status_code == 400
    no_argv = web.api.post("/api/v1/tasks", json={"prompt": "x", "agent": "command"})
    assert no_argv.status_code == 400 and "argv" in no_argv.json()["message"]
    not_json = web.api.post("/api/v1/tasks", content=b"{")
    assert not_json.status_code == 400 and not_json.json()["error"] == "bad_request"
    wrong_type = web.api.post("/api/v1/tasks", json={"prompt": 3})
    assert wrong_type.status_code == 400 and "prompt" in wrong_type.json()["message"]


def test_a_list_of_specs_is_enqueued_in_order(web: WebFleet) -> None:
    specs = [{"prompt": "a", "agent": "command", "argv": ["true"]}] * 2
    reply = web.api.post("/api/v1/tasks", json=specs)
    assert reply.status_code == 201
    ids = [item["id"] for item in reply.json()]
    assert len(ids) == 2 and ids[1] == ids[0] + 1


def test_the_login_link_gives_a_cookie_and_changes_need_the_csrf_token(web: WebFleet) -> None:
    with httpx.Client(base_url=web.url, timeout=30, follow_redirects=True) as browser:
        refused = browser.get("/login", params={"token": "wrong"})
        assert refused.status_code == 401 and "session" not in str(refused.cookies)
        login = browser.get("/login", params={"token": web.token})
        assert login.status_code == 200 and login.url.path == "/"  # redirected to the overview
        assert "Workers" in login.text
        cookie = dict(browser.cookies)
        assert web.token not in cookie.values()
        spec = {"prompt": "p", "agent": "command", "argv": ["true"]}
        forged = browser.post("/api/v1/tasks", json=spec)
        assert forged.status_code == 403 and forged.json()["error"] == "csrf"
        csrf = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        other_site = browser.post(
            "/api/v1/tasks",
            json=spec,
            headers={"x-csrf-token": csrf, "origin": "http://evil.example"},
        )
        assert other_site.status_code == 403
        form_without = browser.post("/actions/enqueue", data={"prompt": "p"})
        assert form_without.status_code == 403
        ok = browser.post("/api/v1/tasks", json=spec, headers={"x-csrf-token": csrf})
        assert ok.status_code == 201


def test_events_stream_live_and_resume_after_last_event_id(web: WebFleet) -> None:
    lines = [codex_line({"type": "agent_message", "text": f"step {n}"}) for n in range(1, 4)]
    task = web.enqueue(printing_agent(*lines, pause=0.2))
    finished(web, task)
    execution = web.fleet.events(task)[0]["execution"]
    headers = {"accept": "text/event-stream", "last-event-id": f"{execution}:1"}
    got, ids = [], []
    with web.api.stream("GET", f"/api/v1/tasks/{task}/events", headers=headers) as stream:
        for line in stream.iter_lines():
            if line.startswith("id: "):
                ids.append(line[4:])
            if line.startswith("data: ["):
                got += json.loads(line[6:])
            if line.startswith("event: end"):
                break
    assert [(e["execution"], e["seq"]) for e in got] == [(execution, 2), (execution, 3)]
    assert got == web.fleet.events(task)[1:], "the same objects as `fleetctl events --json`"
    assert ids[-1] == f"{execution}:3"


def test_a_diff_of_a_repository_task(web: WebFleet, tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", {"readme.txt": "hello\n"})
    argv = ["sh", "-c", f"echo world >> readme.txt; echo '{HELLO}'"]
    task = web.enqueue(argv, repo=str(repo))
    assert finished(web, task)["state"] == "succeeded"
    diff = web.api.get(f"/api/v1/tasks/{task}/diff")
    assert diff.status_code == 200
    assert diff.json() == web.fleet.json("diff", str(task))
    assert "+world" in diff.json()["patch"]


def test_the_openapi_document_names_every_route(web: WebFleet) -> None:
    document = web.api.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {"/api/v1/status", "/api/v1/tasks", "/api/v1/tasks/{task}/events"} <= set(
        document["paths"]
    )
    assert "TaskSpec" in document["components"]["schemas"]


def test_a_killed_web_process_comes_back_on_the_same_address(web: WebFleet) -> None:
    def web_process() -> dict:
        return next(p for p in web.fleet.json("status")["processes"] if p["role"] == "web")

    before = web_process()
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(
        lambda: web_process()["alive"] and web_process()["pid"] != before["pid"],
        30,
        what="the web process to be restarted",
    )
    assert web.api.get("/api/v1/status").status_code == 200
    assert web_process()["restarts"] == before["restarts"] + 1


def test_filters_narrow_the_listing_and_its_pages(web: WebFleet) -> None:
    tag = "filtered-run-7"
    ids = [web.enqueue(["true"], prompt=f"{tag} {n}", labels={"batch": tag}) for n in range(3)]
    web.enqueue(["true"], prompt="unrelated")
    found = web.api.get("/api/v1/tasks", params={"search": tag.upper(), "limit": 2})
    assert [t["id"] for t in found.json()] == sorted(ids, reverse=True)[:2]
    rest = web.api.get(found.links["next"]["url"])
    assert [t["id"] for t in rest.json()] == [min(ids)]
    labelled = web.api.get("/api/v1/tasks", params={"label": f"batch={tag}", "agent": "command"})
    assert sorted(t["id"] for t in labelled.json()) == ids
    assert labelled.json() == web.fleet.json(
        "list", "--label", f"batch={tag}", "--agent", "command"
    )
    everything = web.fleet.json("list", "--search", tag)
    older = web.fleet.json("list", "--search", tag, "--before", str(max(ids)))
    assert older == [t for t in everything if t["id"] < max(ids)] and len(older) == 2
    # Any adapter's name filters (adapters are plug-ins); a name no adapter could have is refused.
    assert web.fleet.json("list", "--agent", "robot") == []
    refused = web.fleet.ctl("list", "--agent", "Robot!", check=False)
    assert refused.returncode == 2 and "--agent" in refused.stderr
    assert web.api.get("/api/v1/tasks", params={"agent": "claude", "search": tag}).json() == []
    assert web.api.get("/api/v1/tasks", params={"agent": "robot"}).json() == []
    assert web.api.get("/api/v1/tasks", params={"agent": "Robot!"}).status_code == 400
    assert web.api.get("/api/v1/tasks", params={"label": "nokey"}).status_code == 400
    page = web.api.get("/tasks", params={"search": tag})
    assert page.status_code == 200 and f"{tag} 2" in page.text and "unrelated" not in page.text


def sse(web: WebFleet, path: str) -> list[tuple[str, object]]:
    """(event name, parsed data) of every message of an SSE stream, until `end`."""
    messages, name = [], None
    headers = {"accept": "text/event-stream"}
    with web.api.stream("GET", path, headers=headers) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                messages.append((name, json.loads(line[6:])))
                if name == "end":
                    break
    return messages


def test_the_page_view_of_a_flood_sends_the_newest_events_and_counts_the_rest(
    web: WebFleet,
) -> None:
    task = web.enqueue(["sh", "-c", "seq 1000"])
    finished(web, task)
    full = sse(web, f"/api/v1/tasks/{task}/events")
    assert sum(len(data) for name, data in full if name == "events") == 1000
    page = sse(web, f"/api/v1/tasks/{task}/events?view=page")
    names = [name for name, _ in page]
    assert names == ["skipped", "events", "end"]
    skipped, events = page[0][1], page[1][1]
    assert skipped["count"] == 800
    assert [e["payload"] for e in events] == list(range(801, 1001))
    assert skipped["before"] == f"{events[0]['execution']}:{events[0]['seq']}"


def test_a_task_the_tracker_made_links_its_issue_and_pull_request(web: WebFleet) -> None:
    task = web.enqueue(["true"], prompt="from an issue", key="github:o/r#7")
    status = TrackerStatus(
        tracker="github",
        api_url="http://127.0.0.1:9/",
        pid=1,
        updated_at=0.0,
        links=[
            TaskLink(
                task=task,
                issue="o/r#7",
                issue_url="https://github.example/o/r/issues/7",
                pull_url="https://github.example/o/r/pull/8",
            )
        ],
    )
    path = status_file(web.fleet.state_dir)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(msgspec.json.encode(status))
    finished(web, task)
    shown = web.api.get(f"/api/v1/tasks/{task}").json()
    assert shown == web.fleet.json("show", str(task))  # the API mirrors fleetctl
    assert shown["tracker"]["pull_url"] == "https://github.example/o/r/pull/8"
    page = web.api.get(f"/tasks/{task}").text
    assert 'href="https://github.example/o/r/pull/8"' in page and "o/r#7" in page
    plain = web.enqueue(["true"], prompt="not from an issue")
    assert "tracker" not in web.api.get(f"/api/v1/tasks/{plain}").json()
