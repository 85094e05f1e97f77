"""logic.plan and Schedule: issues and tasks in, actions out; polls, back-offs, rate limits."""

from __future__ import annotations

from fleetd.tracker.base import AuthError, Issue, RateLimited, TrackerError
from fleetd.tracker.logic import (
    BACKOFF_MAX_SECONDS,
    Cancel,
    Claim,
    Create,
    Entry,
    Phase,
    Report,
    Rerun,
    Schedule,
    Settle,
    plan,
    watched_keys,
)
from shared.models import TaskSpec, TaskView

REPO = "o/r"


def issue(number: int, repo: str = REPO) -> Issue:
    return Issue(repo=repo, number=number, title="t", body="b", labels=("agent-fleet",), url="")


def task(key: str, state: str = "queued", finished_at: int | None = None, id: int = 1) -> TaskView:
    spec = TaskSpec(prompt="p", key=key)
    return TaskView(
        id=id, state=state, spec=spec, attempts=1, enqueued_at=0, finished_at=finished_at
    )


def entry(number: int, reported: int | None = None, **fields) -> Entry:
    return Entry(repo=fields.pop("repo", REPO), number=number, task=1, reported=reported, **fields)


def test_a_requested_issue_without_a_task_is_claimed_and_created_once() -> None:
    one = issue(1)
    assert plan(REPO, [one], [], {}, {}) == [Create(one)]
    for state in ("queued", "running"):
        tasks = {one.key: task(one.key, state)}
        assert plan(REPO, [], [one], tasks, {one.key: entry(1)}) == []
        assert plan(REPO, [one], [], tasks, {one.key: entry(1)}) == [Claim(one)], "asked again"


def test_a_claim_cut_short_is_enqueued_and_another_trackers_claim_is_left_alone() -> None:
    one = issue(1)
    assert plan(REPO, [], [one], {}, {one.key: entry(1)}) == [Create(one, claimed=True)]
    assert plan(REPO, [], [one], {}, {}) == [], "claimed by another node: not ours"


def test_a_finished_task_is_reported_once_then_the_label_again_means_run_again() -> None:
    one = issue(1)
    done = task(one.key, "succeeded", finished_at=50)
    assert plan(REPO, [], [one], {one.key: done}, {one.key: entry(1)}) == [Report(one, done)]
    assert plan(REPO, [one], [], {one.key: done}, {}) == [Report(one, done)], "ledger lost"
    reported = {one.key: entry(1, reported=50)}
    assert plan(REPO, [], [one], {one.key: done}, reported) == [], "reported: nothing more"
    assert plan(REPO, [one], [], {one.key: done}, reported) == [Rerun(one, done)]
    assert plan(REPO, [], [], {one.key: done}, reported) == []


def test_a_closed_or_unclaimed_issue_cancels_its_unfinished_task_or_settles_it() -> None:
    key = issue(1).key
    running = task(key, "running")
    assert plan(REPO, [], [], {key: running}, {key: entry(1)}) == [Cancel(key, running)]
    cancelled = task(key, "cancelled", finished_at=9)
    assert plan(REPO, [], [], {key: cancelled}, {key: entry(1)}) == [Settle(key, 9)]


def test_no_issue_is_taken_for_gone_when_the_lists_are_incomplete() -> None:
    key = issue(1).key
    assert plan(REPO, [], [], {key: task(key, "running")}, {key: entry(1)}, complete=False) == []


def test_other_repositories_and_follow_ups_are_not_cancelled_by_a_poll() -> None:
    other = issue(1, "o/other").key
    follow = f"{issue(2).key}/review/7"
    tasks = {other: task(other, "running"), follow: task(follow, "running")}
    ledger = {other: entry(1, repo="o/other"), follow: entry(2, follows=issue(2).key)}
    assert plan(REPO, [], [], tasks, ledger) == []
    assert watched_keys(REPO, [issue(3)], ledger) == sorted([issue(3).key, follow])


def test_reported_entries_are_not_asked_for_unless_listed_again() -> None:
    ledger = {issue(n).key: entry(n, reported=5) for n in range(1, 4)}
    ledger[issue(4).key] = entry(4)  # in flight
    assert watched_keys(REPO, [issue(2)], ledger) == sorted([issue(2).key, issue(4).key])


def test_polls_come_every_poll_seconds_and_errors_back_off_to_a_cap() -> None:
    schedule = Schedule.of([REPO], 30.0)
    assert schedule.due(0.0) == [REPO]
    schedule.succeeded(REPO, 0.0)
    assert schedule.due(29.0) == [] and schedule.due(30.0) == [REPO]
    assert schedule.failed(REPO, TrackerError("down"), 30.0) is True
    first = schedule.watches[REPO].next_poll - 30.0
    assert schedule.failed(REPO, TrackerError("down"), 30.0) is False, "logged once"
    assert schedule.watches[REPO].next_poll - 30.0 > first
    for _ in range(30):
        schedule.failed(REPO, TrackerError("down"), 30.0)
    assert schedule.watches[REPO].next_poll - 30.0 == BACKOFF_MAX_SECONDS
    assert schedule.watches[REPO].phase is Phase.BACKING_OFF
    schedule.succeeded(REPO, 40.0)
    assert (schedule.watches[REPO].phase, schedule.watches[REPO].error) == (Phase.POLLING, None)


def test_an_auth_error_backs_off_at_once_and_a_rate_limit_waits_for_its_reset() -> None:
    schedule = Schedule.of([REPO], 30.0)
    schedule.failed(REPO, AuthError("401"), 0.0)
    assert schedule.watches[REPO].next_poll == BACKOFF_MAX_SECONDS
    schedule.failed(REPO, RateLimited("spent", reset_at=5000.0), 100.0)
    watch = schedule.watches[REPO]
    assert (watch.phase, watch.next_poll) == (Phase.RATE_LIMITED, 5000.0)
