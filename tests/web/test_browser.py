"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): log in through
the printed link, see the workers and a running task, watch its events arrive without a
reload, enqueue from the form, cancel a running task, retry a failed one, open a diff.
Screenshots are kept under test-artifacts/web/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import wait_for
from tests.support.gitrepo import new_repo
from tests.support.requires import IN_CI
from tests.support.web import WebFleet, codex_line, web_fleet

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("AGENT_FLEET_ARTIFACTS", "test-artifacts")) / "web"
WAIT_MS = 30_000

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not CHROMIUM.exists() and not IN_CI,
        reason="needs Debian's chromium (apt-get install chromium; CI installs it)",
    ),
]


@pytest.fixture(scope="module")
def web() -> Iterator[WebFleet]:
    with web_fleet() as started:
        yield started


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(web: WebFleet, browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    link = web.fleet.ctl("dashboard").stdout.strip()
    assert link.startswith(web.url + "/login?token=")
    opened.goto(link)
    yield opened
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def gated_agent(tmp_path: Path, name: str, lines_before: int, lines_after: int) -> Path:
    """A script that prints some agent messages, waits for a gate file, then prints more."""
    gate = tmp_path / f"{name}.gate"
    before = "".join(
        f"echo '{codex_line({'type': 'agent_message', 'text': f'before {n}'})}'\n"
        for n in range(1, lines_before + 1)
    )
    after = "".join(
        f"echo '{codex_line({'type': 'agent_message', 'text': f'after {n}'})}'; sleep 0.2\n"
        for n in range(1, lines_after + 1)
    )
    command = codex_line(
        {
            "type": "command_execution",
            "command": "make check",
            "aggregated_output": "2 checks passed",
            "exit_code": 0,
        }
    )
    script = tmp_path / f"{name}.sh"
    script.write_text(
        f"{before}echo '{command}'\nwhile [ ! -e {gate} ]; do sleep 0.1; done\n{after}"
    )
    return script


def test_log_in_see_the_fleet_and_watch_a_task_live(web: WebFleet, page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#workers")).to_contain_text("w1")
    expect(page.locator("#workers")).to_contain_text("w2")
    # Enqueue from the form, as a person would.
    script = gated_agent(tmp_path, "live", 2, 3)
    page.fill("textarea[name=prompt]", "watch me work")
    page.select_option("select[name=agent]", "command")
    page.fill("input[name=argv]", f"sh {script}")
    page.click("#enqueue button[type=submit]")
    page.wait_for_url("**/tasks/*")
    task = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#events")).to_contain_text("before 2")
    expect(page.locator("#events")).to_contain_text("$ make check")
    # The overview shows it running.
    page.goto(web.url + "/")
    expect(page.locator("#running")).to_contain_text("watch me work")
    expect(page.locator("#running")).to_contain_text("$ make check (exit 0)")  # its latest
    expect(page.locator("#workers")).to_contain_text("busy")
    shot(page, "overview")
    # Back on its page, new events arrive without a reload.
    page.goto(f"{web.url}/tasks/{task}")
    expect(page.locator("#events")).to_contain_text("before 2")
    marker = page.evaluate("() => { window.notReloaded = true; return window.notReloaded; }")
    assert marker is True
    (tmp_path / "live.gate").touch()
    expect(page.locator("#events")).to_contain_text("after 3")
    expect(page.locator("#stream-state")).to_have_text("finished")
    expect(page.locator("#task-state")).to_have_text("succeeded")
    assert page.evaluate("() => window.notReloaded") is True, "the page was reloaded"
    shot(page, "task")
    page.check("#raw")
    expect(page.locator("#events")).to_contain_text('"seq": 1')


def test_the_overview_follows_the_fleet_without_a_reload(
    web: WebFleet, page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page.evaluate("() => { window.notReloaded = true; }")
    script = gated_agent(tmp_path, "overview", 1, 0)
    task = web.enqueue(["sh", str(script)], prompt="appears by itself")
    expect(page.locator("#running")).to_contain_text("appears by itself")
    (tmp_path / "overview.gate").touch()
    wait_for(lambda: web.fleet.show(task)["state"] == "succeeded", 60, what="the task")
    expect(page.locator("#running")).not_to_contain_text("appears by itself")
    assert page.evaluate("() => window.notReloaded") is True


def test_cancel_a_running_task(web: WebFleet, page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    script = gated_agent(tmp_path, "cancel", 1, 0)
    task = web.enqueue(["sh", str(script)], prompt="cancel me")
    page.goto(f"{web.url}/tasks/{task}")
    expect(page.locator("#events")).to_contain_text("before 1")
    page.click("#cancel")
    wait_for(lambda: web.fleet.show(task)["state"] == "cancelled", 60, what="the cancel")
    page.reload()
    expect(page.locator("#task-state")).to_have_text("cancelled")


def test_retry_a_failed_task(web: WebFleet, page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    marker = tmp_path / "failed-once"
    script = tmp_path / "fails-once.sh"
    script.write_text(f"[ -e {marker} ] && exit 0\ntouch {marker}\nexit 3\n")
    task = web.enqueue(["sh", str(script)], prompt="retry me")
    wait_for(lambda: web.fleet.show(task)["state"] == "failed", 60, what="the first attempt")
    page.goto(f"{web.url}/tasks/{task}")
    expect(page.locator("#task-state")).to_have_text("failed")
    page.click("#retry")
    wait_for(lambda: web.fleet.show(task)["state"] == "succeeded", 60, what="the retry")
    page.goto(f"{web.url}/tasks/{task}")
    expect(page.locator("#task-state")).to_have_text("succeeded")
    assert len(web.fleet.show(task)["executions"]) == 2


def test_open_a_diff(web: WebFleet, page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    repo = new_repo(tmp_path / "repo", {"readme.txt": "hello\n"})
    message = codex_line({"type": "agent_message", "text": "done"})
    task = web.enqueue(["sh", "-c", f"echo world >> readme.txt; echo '{message}'"], repo=str(repo))
    wait_for(lambda: web.fleet.show(task)["state"] == "succeeded", 60, what="the repo task")
    page.goto(f"{web.url}/tasks/{task}")
    page.click("#diff-link")
    expect(page.locator("#diff .add")).to_contain_text("+world")
    shot(page, "diff")


def test_without_the_link_the_page_says_how_to_get_in(web: WebFleet, browser) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    anonymous = context.new_page()
    anonymous.goto(web.url + "/")
    expect(anonymous.locator("#login-help")).to_contain_text("fleetctl dashboard")
    context.close()
