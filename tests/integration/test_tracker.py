"""The tracker through a real fleetd and the GitHub stand-in: labelled issues in, branches and
pull requests out, kept in step, the token never written down."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.support.fleet import wait_for
from tests.support.gitrepo import run_git
from tests.support.tracked import REPO, SECRET, Tracked, agent, tracked_fleet

pytestmark = pytest.mark.timeout(120)

FIX = agent("printf 'hello\\n' > hello.txt")


def polls(tracked: Tracked, at_least: int) -> None:
    """Wait for `at_least` more polls of the issue list."""
    seen = len(tracked.github.requests_to(rf"/repos/{REPO}/issues"))
    wait_for(
        lambda: len(tracked.github.requests_to(rf"/repos/{REPO}/issues")) >= seen + at_least,
        30,
        what=f"{at_least} more polls",
    )


def test_a_labelled_issue_becomes_one_task_a_branch_and_a_pull_request() -> None:
    with tracked_fleet(FIX) as tracked:
        github = tracked.github
        issue = github.add_issue(REPO, "Greeting is misspelt", "It says helo.", ["agent-fleet"])
        other = github.add_issue(REPO, "Unrelated", "Leave me alone.", ["bug"])
        pulls = github.repos[REPO].pulls
        wait_for(lambda: pulls, 60, what="a pull request")
        [pull] = pulls.values()
        [task] = tracked.tasks()
        assert task["state"] == "succeeded"
        assert task["spec"]["key"] == f"github:{REPO}#{issue.number}"
        assert pull.head == f"fleet/{task['id']}" and pull.base == "main"
        assert pull.body.startswith(f"Fixes #{issue.number}\n")
        assert "fixed the greeting" in pull.body and "hello.txt" in pull.body
        commit = tracked.branch(pull.head)
        assert commit is not None, "the branch was pushed to the remote"
        assert run_git(tracked.bare, "show", f"{commit}:hello.txt") == "hello\n"
        wait_for(lambda: "agent-fleet:done" in issue.labels, 30, what="the done label")
        assert issue.labels == ["agent-fleet:done"], "the label gave way to :running, then :done"
        [comment] = issue.comments
        assert pull.number and f"/pull/{pull.number}" in comment["body"]
        polls(tracked, 3)
        assert len(tracked.tasks()) == 1, "later polls made no second task"
        assert other.comments == [] and other.labels == ["bug"], "the unlabelled issue is untouched"
        assert any(s.status == 304 for s in github.requests_to(rf"/repos/{REPO}/issues")), (
            "unchanged lists are asked for conditionally and answered 304"
        )
        assert all(s.authorised for s in github.seen)


def test_a_restart_makes_no_second_task_and_a_label_applied_again_runs_it_again() -> None:
    with tracked_fleet(FIX) as tracked:
        github = tracked.github
        issue = github.add_issue(REPO, "Greeting", "Fix it.", ["agent-fleet"])
        wait_for(lambda: "agent-fleet:done" in issue.labels, 60, what="the first result")
        tracked.restart()
        polls(tracked, 3)
        [task] = tracked.tasks()
        assert task["attempts"] == 1 and len(issue.comments) == 1
        with github.lock:
            issue.labels.append("agent-fleet")
        wait_for(lambda: len(issue.comments) == 2, 60, what="the second report")
        [task] = tracked.tasks()
        assert task["attempts"] == 2, "the same task ran again"
        assert len(github.repos[REPO].pulls) == 1, "the branch's pull request is reused"


def test_two_fleetd_nodes_watching_one_repository_make_one_task() -> None:
    with tracked_fleet(FIX) as tracked:
        second = tracked.add_node()
        issue = tracked.github.add_issue(REPO, "Greeting", "Fix it.", ["agent-fleet"])
        wait_for(lambda: "agent-fleet:done" in issue.labels, 60, what="the result")
        polls(tracked, 3)
        tasks = tracked.tasks() + second.json("list")
        assert len(tasks) == 1, tasks
        assert len(tracked.github.repos[REPO].pulls) == 1 and len(issue.comments) == 1


def test_a_failed_task_comments_its_reason_and_class_and_opens_no_pull_request() -> None:
    with tracked_fleet(agent("echo 'model: unauthorized (401)' >&2; exit 3")) as tracked:
        issue = tracked.github.add_issue(REPO, "Greeting", "Fix it.", ["agent-fleet"])
        wait_for(lambda: "agent-fleet:failed" in issue.labels, 60, what="the failure report")
        [task] = tracked.tasks()
        assert task["state"] == "failed"
        [comment] = issue.comments
        assert comment["body"].startswith(f"agent-fleet task {task['id']} failed: ")
        assert "(failure class: " in comment["body"]
        assert "agent-fleet:running" not in issue.labels
        assert tracked.github.repos[REPO].pulls == {}


def test_closing_the_issue_cancels_its_running_task() -> None:
    with tracked_fleet(agent("sleep 60")) as tracked:
        issue = tracked.github.add_issue(REPO, "Slow", "Takes long.", ["agent-fleet"])
        wait_for(lambda: [t for t in tracked.tasks() if t["state"] == "running"], 60)
        [task] = tracked.tasks()
        with tracked.github.lock:
            issue.state = "closed"
        tracked.fleet.wait_state(task["id"], "cancelled", timeout=60)
        polls(tracked, 3)
        assert issue.comments == [], "a closed issue's cancelled task is not reported"


def test_a_review_comment_starts_a_follow_up_that_pushes_to_the_same_branch() -> None:
    script = "if [ -f hello.txt ] && grep -q hello hello.txt; then echo reviewed >> hello.txt; "
    script += "else printf 'hello\\n' > hello.txt; fi"
    with tracked_fleet(agent(script)) as tracked:
        github = tracked.github
        issue = github.add_issue(REPO, "Greeting", "Fix it.", ["agent-fleet"])
        wait_for(lambda: "agent-fleet:done" in issue.labels, 60, what="the pull request")
        [pull] = github.repos[REPO].pulls.values()
        first = tracked.branch(pull.head)
        github.add_review_comment(REPO, pull.number, "@agent-fleet please also review it")
        github.add_review_comment(REPO, pull.number, "a note for humans only")
        github.add_review_comment(REPO, pull.number, "@agent-fleet rm -rf /", association="NONE")
        pr_thread = github.repos[REPO].issues[pull.number].comments
        wait_for(lambda: pr_thread, 60, what="the follow-up's comment on the pull request")
        second = tracked.branch(pull.head)
        assert second != first
        assert run_git(tracked.bare, "rev-parse", f"{second}~1").strip() == first
        assert run_git(tracked.bare, "show", f"{second}:hello.txt") == "hello\nreviewed\n"
        assert second[:12] in pr_thread[0]["body"]
        polls(tracked, 3)
        tasks = sorted(tracked.tasks(), key=lambda t: t["id"])
        assert len(tasks) == 2, "one follow-up, for the one comment that asks and may write"
        # It continues the first task's thread (a command agent has none: it runs fresh).
        assert [t["spec"].get("continues") for t in tasks] == [None, tasks[0]["id"]]
        assert len(github.repos[REPO].pulls) == 1


def test_the_token_is_in_no_file_no_log_no_fleetctl_output_and_no_agent() -> None:
    # The agent commits its own environment: masking would hide a leak from the events.
    with tracked_fleet(agent("env > seen-env.txt; printf 'hello\\n' > hello.txt")) as tracked:
        issue = tracked.github.add_issue(REPO, "Greeting", "Fix it.", ["agent-fleet"])
        wait_for(lambda: "agent-fleet:done" in issue.labels, 60, what="the result")
        [pull] = tracked.github.repos[REPO].pulls.values()
        seen = run_git(tracked.bare, "show", f"{pull.head}:seen-env.txt")
        assert "PATH=" in seen and "GITHUB_TOKEN" not in seen and SECRET not in seen
        fleet = tracked.fleet
        outputs = [fleet.ctl(*args) for args in (["list"], ["show", "1"], ["status"])]
        outputs += [fleet.ctl(*args, "--json") for args in (["list"], ["show", "1"])]
        outputs += [fleet.ctl("events", "1"), fleet.ctl("tracker"), fleet.ctl("tracker", "--json")]
        for done in outputs:
            assert SECRET not in done.stdout + done.stderr
        # As given, and as git's basic-auth header carries it.
        secrets = [SECRET.encode(), base64.b64encode(f"x-access-token:{SECRET}".encode())]
        for secret in secrets:
            assert secret.decode() not in fleet.log()
        files = [p for p in Path(fleet.state_dir).rglob("*") if p.is_file() and not p.is_symlink()]
        assert any(p.name == "ledger.json" for p in files)
        for path in files:
            data = path.read_bytes()
            assert not [secret for secret in secrets if secret in data], path


def test_fleetctl_shows_the_issue_and_pull_request_and_the_tracker_its_polls() -> None:
    with tracked_fleet(FIX) as tracked:
        issue = tracked.github.add_issue(REPO, "Greeting", "Fix it.", ["agent-fleet"])
        wait_for(lambda: "agent-fleet:done" in issue.labels, 60, what="the result")
        [pull] = tracked.github.repos[REPO].pulls.values()
        pull_url = f"https://github.example/{REPO}/pull/{pull.number}"
        fleet = tracked.fleet
        polls(tracked, 2)  # the status written after the report
        shown = fleet.ctl("show", "1").stdout
        assert f"https://github.example/{REPO}/issues/{issue.number}" in shown
        assert pull_url in shown
        assert fleet.json("show", "1")["tracker"]["pull_url"] == pull_url
        human = fleet.ctl("tracker").stdout
        assert REPO in human and "polling" in human and "rate limit:" in human
        status = fleet.json("tracker")
        [repo] = status["repos"]
        assert repo["polls"] >= 2 and repo["errors"] == 0 and repo["error"] is None
        assert 0 < status["rate_remaining"] < status["rate_limit"]


def test_a_refused_token_is_reported_once_and_polling_backs_off() -> None:
    with tracked_fleet(FIX, token="ghp_notTheRightOne") as tracked:
        tracked.github.add_issue(REPO, "Greeting", "Fix it.", ["agent-fleet"])
        fleet = tracked.fleet

        def refused() -> dict | None:
            status = fleet.json("tracker")
            return status if status["repos"][0]["errors"] else None

        status = wait_for(refused, 30, what="the tracker to report the 401")
        [repo] = status["repos"]
        assert repo["phase"] == "backing off" and "401" in repo["error"]
        assert repo["next_poll"] - status["updated_at"] > 60, "backed off far past poll_seconds"
        assert fleet.log().count("GitHub refused the token") == 1
        assert "ghp_notTheRightOne" not in fleet.log() + fleet.ctl("tracker").stdout
        assert fleet.json("list") == []


def test_a_spent_rate_limit_waits_for_its_reset() -> None:
    with tracked_fleet(FIX) as tracked:
        polls(tracked, 1)
        with tracked.github.lock:
            tracked.github.rate_limit_left = 0

        def limited() -> dict | None:
            [repo] = tracked.fleet.json("tracker")["repos"]
            return repo if repo["phase"] == "rate limited" else None

        repo = wait_for(limited, 30, what="the tracker to see the rate limit")
        assert repo["next_poll"] >= tracked.github.rate_limit_reset
        assert "rate limit" in repo["error"]


def test_the_repositorys_workflow_md_gives_the_prompt_and_the_options(tmp_path: Path) -> None:
    with tracked_fleet(FIX) as tracked:
        work = tmp_path / "work"
        run_git(tmp_path, "clone", "-q", str(tracked.bare), str(work))
        front = "---\ntimeout: 120\nmax_attempts: 1\n---\n"
        (work / "WORKFLOW.md").write_text(
            front + "Resolve #{{ issue.number }}: {{ issue.title }}\n"
        )
        run_git(work, "add", "WORKFLOW.md")
        run_git(work, "commit", "-q", "-m", "workflow")
        run_git(work, "push", "-q", "origin", "main")
        issue = tracked.github.add_issue(REPO, "Greeting", "Fix it.", ["agent-fleet"])
        wait_for(lambda: "agent-fleet:done" in issue.labels, 60, what="the result")
        [task] = tracked.tasks()
        spec = task["spec"]
        assert spec["prompt"].strip() == f"Resolve #{issue.number}: Greeting"
        assert (spec["timeout"], spec["max_attempts"]) == (120.0, 1)
