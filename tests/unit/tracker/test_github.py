"""The GitHub client against the loopback stand-in: auth, conditional requests, the rate limit,
pull requests and labels; and the pusher, whose token stays in git's environment."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.tracker.base import AuthError, NewPull, RateLimited, Repository, TrackerError
from fleetd.tracker.github import GitHub
from fleetd.tracker.mirror import Mirrors
from fleetd.tracker.push import Pusher
from shared.paths import StatePaths
from tests.support.git_http import GitHttpServer
from tests.support.github_server import GitHubServer, Issue
from tests.support.gitrepo import commit_all, run_git
from tests.support.tracked import REPO, SECRET, bare_remote

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def github(tmp_path: Path) -> Iterator[GitHubServer]:
    with GitHubServer(token=SECRET) as server:
        server.add_repo(REPO, bare_remote(tmp_path))
        yield server


def test_without_the_right_token_every_call_is_an_auth_error_that_hides_it(
    github: GitHubServer,
) -> None:
    wrong = "ghp_wrongTokenValue"
    with pytest.raises(AuthError, match="token_env") as caught:
        GitHub(github.url, wrong).repository(REPO)
    assert wrong not in str(caught.value) and SECRET not in str(caught.value)
    assert github.seen[-1].status == 401 and not github.seen[-1].authorised


def test_an_unchanged_list_is_a_304_that_keeps_the_last_answer_and_the_budget(
    github: GitHubServer,
) -> None:
    github.add_issue(REPO, "one", "", ["agent-fleet"])
    github.add_issue(REPO, "two", "", ["other"])
    client = GitHub(github.url, SECRET)
    first = client.labelled_issues(REPO, "agent-fleet")
    left = client.budget.remaining
    again = client.labelled_issues(REPO, "agent-fleet")
    assert [i.title for i in first.issues] == ["one"] and first.fresh
    assert again.issues == first.issues and not again.fresh
    assert github.seen[-1].status == 304 and github.seen[-1].conditional
    assert client.budget.remaining == left, "a 304 costs no rate limit"
    assert client.budget.limit == GitHubServer.RATE_LIMIT


def test_pull_requests_listed_among_issues_are_not_issues(github: GitHubServer) -> None:
    github.add_issue(REPO, "real", "", ["agent-fleet"])
    github.repos[REPO].issues[99] = Issue(99, "a pull", "", ["agent-fleet"], pull=True)
    polled = GitHub(github.url, SECRET).labelled_issues(REPO, "agent-fleet")
    assert [issue.number for issue in polled.issues] == [1]


def test_a_spent_rate_limit_is_rate_limited_until_the_reset(github: GitHubServer) -> None:
    github.rate_limit_left = 0
    with pytest.raises(RateLimited) as caught:
        GitHub(github.url, SECRET).labelled_issues(REPO, "agent-fleet")
    assert caught.value.reset_at == github.rate_limit_reset


def test_workflow_is_read_from_the_default_branch_or_none(
    github: GitHubServer, tmp_path: Path
) -> None:
    client = GitHub(github.url, SECRET)
    assert client.workflow(REPO, "main") is None
    work = tmp_path / "work"
    run_git(tmp_path, "clone", "-q", str(github.repos[REPO].bare), str(work))
    (work / "WORKFLOW.md").write_text("---\nmodel: m\n---\nDo {{ issue.title }}\n")
    commit_all(work, "workflow")
    run_git(work, "push", "-q", "origin", "main")
    assert client.workflow(REPO, "main") == "---\nmodel: m\n---\nDo {{ issue.title }}\n"


def test_labels_comments_and_one_pull_request_per_branch(github: GitHubServer) -> None:
    issue = github.add_issue(REPO, "one", "", ["agent-fleet"])
    client = GitHub(github.url, SECRET)
    client.comment(REPO, issue.number, "hello")
    client.remove_label(REPO, issue.number, "agent-fleet")
    client.remove_label(REPO, issue.number, "agent-fleet")  # already gone: no error
    client.add_label(REPO, issue.number, "agent-fleet:done")
    assert issue.labels == ["agent-fleet:done"]
    assert [c.body for c in client.comments(REPO, issue.number)] == ["hello"]
    assert client.pull_for(REPO, "main") is None
    with pytest.raises(TrackerError, match="422"):
        client.open_pull(REPO, NewPull(title="t", head="nope", base="main", body=""))
    pull = client.open_pull(REPO, NewPull(title="t", head="main", base="main", body="b"))
    assert client.pull_for(REPO, "main") == pull


def test_the_pusher_gives_git_the_header_in_its_environment_only(
    github: GitHubServer, tmp_path: Path
) -> None:
    client = GitHub(github.url, SECRET)
    pusher = Pusher(client.push_headers(), {"PATH": "/usr/bin:/bin"}, [SECRET])
    url = "https://git.example/acme/widgets.git"
    env = pusher.environment(url)
    pair = base64.b64encode(f"x-access-token:{SECRET}".encode()).decode()
    assert env["GIT_CONFIG_KEY_0"] == f"http.{url}.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {pair}"
    assert SECRET not in repr(pusher) and SECRET not in repr(client)

    source = tmp_path / "clone"
    bare = github.repos[REPO].bare
    run_git(tmp_path, "clone", "-q", str(bare), str(source))
    (source / "new.txt").write_text("x\n")
    commit = commit_all(source, "change")
    pusher.push(source, commit, bare.as_uri(), "fleet/1", force=True)
    assert run_git(bare, "rev-parse", "fleet/1").strip() == commit
    with pytest.raises(TrackerError) as caught:
        pusher.push(source, commit, f"file:///nowhere/{SECRET}/{pair}.git", "fleet/1", force=True)
    assert SECRET not in str(caught.value) and pair not in str(caught.value)
    assert "***" in str(caught.value)


def test_every_page_of_a_long_list_is_read_and_past_the_cap_it_says_incomplete(
    github: GitHubServer,
) -> None:
    for n in range(5):
        github.add_issue(REPO, f"issue {n}", "", ["agent-fleet"])
    client = GitHub(github.url, SECRET, page_size=2)
    polled = client.labelled_issues(REPO, "agent-fleet")
    assert sorted(i.number for i in polled.issues) == [1, 2, 3, 4, 5] and polled.complete
    again = client.labelled_issues(REPO, "agent-fleet")
    assert again.fresh, "a list of several pages is asked for afresh: a later page may change"
    for n in range(5, 25):
        github.add_issue(REPO, f"issue {n}", "", ["agent-fleet"])
    assert not client.labelled_issues(REPO, "agent-fleet").complete, "over 10 pages of 2"


def test_a_retry_after_answer_is_a_rate_limit_for_that_long(github: GitHubServer) -> None:
    github.retry_after = 120
    asked_at = time.time()
    with pytest.raises(RateLimited, match="slow down") as caught:
        GitHub(github.url, SECRET).labelled_issues(REPO, "agent-fleet")
    assert caught.value.reset_at >= asked_at + 120


def test_fetch_and_push_carry_the_token_over_http_and_fail_masked_without_it(
    github: GitHubServer, tmp_path: Path
) -> None:
    bare = github.repos[REPO].bare
    with GitHttpServer(bare.parent, SECRET, tmp_path) as server:
        url = server.url(bare.name)
        info = Repository(name=REPO, clone_url=url, default_branch="main")
        client = GitHub(github.url, SECRET)
        host = {"PATH": os.environ["PATH"], "GIT_SSL_CAINFO": str(server.ca_file)}
        pusher = Pusher(client.push_headers(), host, [SECRET])
        mirrors = Mirrors(tmp_path / "repos", StatePaths(tmp_path / "state"), pusher)
        mirror = mirrors.update(info)
        assert run_git(mirror, "rev-parse", "HEAD") == run_git(bare, "rev-parse", "main")
        work = tmp_path / "work"
        run_git(tmp_path, "clone", "-q", str(mirror), str(work))
        (work / "fix.txt").write_text("fixed\n")
        commit = commit_all(work, "fix")
        run_git(work, "push", "-q", "origin", "HEAD:refs/heads/fleet/9")  # into the mirror
        pusher.push(mirror, commit, url, "fleet/9", force=True)
        assert run_git(bare, "rev-parse", "fleet/9").strip() == commit
        assert server.refused == 0, "git sent the header from the first request"

        anonymous = Pusher({}, host, [SECRET])
        with pytest.raises(TrackerError, match="cannot fetch") as caught:
            Mirrors(tmp_path / "other", StatePaths(tmp_path / "state"), anonymous).update(info)
        assert server.refused > 0 and SECRET not in str(caught.value)


def test_a_hook_or_config_planted_in_the_clone_never_runs_with_the_token(
    github: GitHubServer, tmp_path: Path
) -> None:
    bare = github.repos[REPO].bare
    info = Repository(name=REPO, clone_url=bare.as_uri(), default_branch="main")
    pusher = Pusher(GitHub(github.url, SECRET).push_headers(), {"PATH": os.environ["PATH"]}, [])
    mirrors = Mirrors(tmp_path / "repos", StatePaths(tmp_path / "state"), pusher)
    mirror = mirrors.update(info)
    ran = tmp_path / "hook-ran"
    hook = mirror / "hooks" / "pre-push"
    hook.write_text(f"#!/bin/sh\nenv > {ran}\n")
    hook.chmod(0o755)
    with (mirror / "config").open("a") as config:
        config.write("[http]\n\tsslVerify = false\n\tproxy = http://127.0.0.1:9\n")
    assert mirrors.checked(info) == mirror
    assert "proxy" not in (mirror / "config").read_text(), "the planted config is gone"
    commit = run_git(mirror, "rev-parse", "main").strip()
    pusher.push(mirror, commit, bare.as_uri(), "fleet/5", force=True)
    assert not ran.exists(), "no hook ran"
