"""Sync against the stand-in and a queue stand-in (the integration tests use the real fleet):
one issue's failure does not stop the others; a spent budget or an unreachable fleetd ends it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.tracker.base import RateLimited
from fleetd.tracker.github import GitHub
from fleetd.tracker.mirror import Mirrors
from fleetd.tracker.push import Pusher
from fleetd.tracker.results import Results
from fleetd.tracker.sync import BUDGET_RESERVE, QueueUnavailable, Sync
from shared import messages as m
from shared.config import GitHubTrackerConfig
from shared.errors import DaemonUnavailable
from shared.models import TaskView
from shared.paths import StatePaths
from tests.support.github_server import GitHubServer
from tests.support.gitrepo import run_git
from tests.support.tracked import REPO, SECRET, bare_remote

pytestmark = pytest.mark.timeout(60)


class Queue:
    """Enqueue, FindTasks and nothing else, keyed as the broker keys them."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskView] = {}
        self.down = False

    def request(self, message: m.Message) -> m.Message:
        if self.down:
            raise DaemonUnavailable("fleetd is not running")
        match message:
            case m.FindTasks(keys=keys):
                return m.TaskList(tasks=[self.tasks[k] for k in keys if k in self.tasks])
            case m.Enqueue(tasks=[spec]):
                view = TaskView(
                    id=len(self.tasks) + 1, state="queued", spec=spec, attempts=0, enqueued_at=0
                )
                self.tasks[spec.key] = view
                return m.Enqueued(ids=[view.id], created=[True])
        raise AssertionError(message)


@pytest.fixture
def github(tmp_path: Path) -> Iterator[GitHubServer]:
    with GitHubServer(token=SECRET) as server:
        server.add_repo(REPO, bare_remote(tmp_path))
        yield server


def sync_of(github: GitHubServer, queue: Queue, tmp_path: Path) -> Sync:
    config = GitHubTrackerConfig(api_url=github.url, repos=[REPO], agent="command", argv=["x"])
    client = GitHub(github.url, SECRET)
    pusher = Pusher(client.push_headers(), {"PATH": "/usr/bin:/bin"}, [SECRET])
    mirrors = Mirrors(tmp_path / "tracker" / "repos", StatePaths(tmp_path / "state"), pusher)
    results = Results(config, client, pusher, mirrors)
    return Sync(config, client, queue, results, mirrors, tmp_path / "ledger.json")


def test_an_issue_that_cannot_be_read_is_passed_over_and_the_others_are_enqueued(
    github: GitHubServer, tmp_path: Path
) -> None:
    broken = github.add_issue(REPO, "broken", "", ["agent-fleet"])
    fine = github.add_issue(REPO, "fine", "", ["agent-fleet"])
    github.failing.add(f"/repos/{REPO}/issues/{broken.number}/comments")
    queue = Queue()
    sync = sync_of(github, queue, tmp_path)
    sync.poll(REPO)
    assert list(queue.tasks) == [f"github:{REPO}#{fine.number}"]
    assert f"github:{REPO}#{broken.number}" in sync.failures
    spec = queue.tasks[f"github:{REPO}#{fine.number}"].spec
    assert (spec.agent, spec.argv) == ("command", ["x"])
    mirror = Path(spec.repo or "")
    assert mirror.parent == tmp_path / "tracker" / "repos", "the tracker's own clone"
    bare = github.repos[REPO].bare
    assert run_git(mirror, "rev-parse", "HEAD") == run_git(bare, "rev-parse", "main")
    assert spec.labels["issue"] == f"{REPO}#{fine.number}"
    assert fine.labels == ["agent-fleet:running"], "claimed: the label gave way"
    assert broken.labels == ["agent-fleet:running"], "claimed, then cut short"
    github.failing.clear()
    sync.poll(REPO)
    assert len(queue.tasks) == 2, "the claim cut short is enqueued at the next poll"
    sync.poll(REPO)
    assert len(queue.tasks) == 2, "the keys find the tasks: no third one"


def test_of_two_trackers_only_the_one_that_takes_the_label_makes_a_task(
    github: GitHubServer, tmp_path: Path
) -> None:
    issue = github.add_issue(REPO, "one", "", ["agent-fleet"])
    first, second = Queue(), Queue()
    sync_a = sync_of(github, first, tmp_path / "a")
    sync_b = sync_of(github, second, tmp_path / "b")
    # Both saw the labelled issue before either claimed it.
    listed = sync_b.tracker.labelled_issues(REPO, "agent-fleet").issues
    sync_a.poll(REPO)
    assert sync_b.tracker.take_label(REPO, issue.number, "agent-fleet") is False
    assert listed and len(first.tasks) == 1
    sync_b.poll(REPO)
    assert second.tasks == {}, "the other tracker's claim is not ours"


def test_a_spent_rate_limit_and_an_unreachable_fleetd_end_the_poll(
    github: GitHubServer, tmp_path: Path
) -> None:
    github.add_issue(REPO, "one", "", ["agent-fleet"])
    queue = Queue()
    sync = sync_of(github, queue, tmp_path)
    queue.down = True
    with pytest.raises(QueueUnavailable, match="not running"):
        sync.poll(REPO)
    queue.down = False
    github.rate_limit_left = 0
    with pytest.raises(RateLimited):
        sync.poll(REPO)
    assert queue.tasks == {}


def test_a_budget_under_the_reserve_waits_for_its_reset_without_asking(
    github: GitHubServer, tmp_path: Path
) -> None:
    github.add_issue(REPO, "one", "", ["agent-fleet"])
    queue = Queue()
    sync = sync_of(github, queue, tmp_path)
    sync.poll(REPO)
    asked = len(github.seen)
    github.rate_limit_left = BUDGET_RESERVE
    sync.poll(REPO)  # the answers now say how little is left
    github.rate_limit_left = 100
    with pytest.raises(RateLimited, match="reserve") as caught:
        sync.poll(REPO)
    assert caught.value.reset_at == github.rate_limit_reset
    seen = len(github.seen)
    with pytest.raises(RateLimited):
        sync.poll(REPO)
    assert len(github.seen) == seen > asked, "no request while under the reserve"
    sync.tracker.budget.reset_at = 0  # the reset has passed: ask again
    sync.poll(REPO)
    assert len(github.seen) > seen
