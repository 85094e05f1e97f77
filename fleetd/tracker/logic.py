"""The tracker's state machine, socket-free: when each repository is polled, how errors back
off, and what one poll's answer asks of the queue and of the tracker.

`plan()` is the whole policy of issues and tasks, a pure function: the repository's open
issues with the label and with the running label, the tasks found by their keys and the
ledger (what this tracker claimed and reported) in; actions out. An issue becomes a task once:
the key is the issue, and a tracker first claims it by taking the label off (GitHub answers
404 to the second of two trackers that try, so two fleetd nodes never both take it) and
putting the running label on. Its finished task is reported once (the ledger keeps the finish
time it reported); the label applied again after that runs the task again; an issue closed,
or stripped of the running label, while its task is queued or running cancels it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import msgspec

from fleetd.tracker.base import AuthError, Issue, RateLimited, TrackerError
from shared.models import TERMINAL_STATES, TaskView

BACKOFF_MAX_SECONDS = 900.0


class Entry(msgspec.Struct, kw_only=True):
    """What the tracker remembers of one issue's task (kept in tracker/ledger.json)."""

    repo: str
    number: int
    task: int  # 0: claimed, not yet enqueued (the next poll enqueues it)
    reported: int | None = None  # the task's finished_at this tracker reported
    branch: str | None = None  # the pushed branch
    pull: int | None = None
    pull_url: str | None = None
    issue_url: str | None = None
    reviews: list[int] = []  # review comments already taken as follow-ups
    follows: str | None = None  # a follow-up: the key of the entry whose branch it pushes to


# --- what a poll asks for ----------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    """No task has this issue's key: claim the issue (unless this tracker did) and make one."""

    issue: Issue
    claimed: bool = False


@dataclass(frozen=True)
class Claim:
    """The label was applied again while the task is queued or running: take it back."""

    issue: Issue


@dataclass(frozen=True)
class Rerun:
    """The label was applied again after the task's result was reported: claim, new attempt."""

    issue: Issue
    task: TaskView


@dataclass(frozen=True)
class Report:
    """The task finished and nobody has been told: push, open the pull request, comment."""

    issue: Issue
    task: TaskView


@dataclass(frozen=True)
class Cancel:
    """The issue was closed or lost its running label while its task is queued or running."""

    key: str
    task: TaskView


@dataclass(frozen=True)
class Settle:
    """The task of a gone issue finished: remember it, tell nobody."""

    key: str
    finished_at: int


Action = Create | Claim | Rerun | Report | Cancel | Settle


def plan(
    repo: str,
    requested: list[Issue],
    claimed: list[Issue],
    tasks: dict[str, TaskView],
    ledger: dict[str, Entry],
    complete: bool = True,
) -> list[Action]:
    """What one poll of `repo` asks for (see the module's docstring).

    `requested`: the open issues with the label; `claimed`: those with the running label,
    which a tracker puts in its place when it takes an issue (on one node or several: taking
    the label off is the claim, and only one tracker's removal succeeds). When the lists are
    not `complete` (too many issues to read in one poll), no issue is taken for gone.
    """
    actions: list[Action] = []
    for issue in requested:
        task = tasks.get(issue.key)
        if task is None:
            actions.append(Create(issue))
        elif task.state not in TERMINAL_STATES:
            actions.append(Claim(issue))
        elif _reported(ledger.get(issue.key), task):
            actions.append(Rerun(issue, task))
        else:
            actions.append(Report(issue, task))
    asked = {issue.key for issue in requested}
    for issue in claimed:
        task, entry = tasks.get(issue.key), ledger.get(issue.key)
        if issue.key in asked or entry is None:  # asked again, or another tracker's claim
            continue
        if task is None:
            actions.append(Create(issue, claimed=True))  # claimed, then cut short
        elif task.state in TERMINAL_STATES and not _reported(entry, task):
            actions.append(Report(issue, task))
    listed = asked | {issue.key for issue in claimed}
    for key, entry in ledger.items() if complete else ():
        task = tasks.get(key)
        if entry.repo != repo or key in listed or task is None or entry.follows is not None:
            continue
        if task.state not in TERMINAL_STATES:
            actions.append(Cancel(key, task))
        elif not _reported(entry, task) and task.finished_at is not None:
            actions.append(Settle(key, task.finished_at))
    return actions


def _reported(entry: Entry | None, task: TaskView) -> bool:
    return entry is not None and entry.reported == task.finished_at


def watched_keys(repo: str, issues: list[Issue], ledger: dict[str, Entry]) -> list[str]:
    """The keys whose tasks a poll of `repo` needs: its listed issues', and its ledger's not
    yet reported (a reported one matters again only when its label is applied again, which
    lists it). So a poll asks for as many tasks as are in flight, not as the ledger holds."""
    keys = {issue.key for issue in issues}
    keys |= {key for key, entry in ledger.items() if entry.repo == repo and entry.reported is None}
    return sorted(keys)


# --- when to poll ------------------------------------------------------------------------------


class Phase(enum.Enum):
    """A watched repository's polling phase."""

    POLLING = "polling"  # every poll_seconds
    BACKING_OFF = "backing off"  # after an error: doubling waits, capped
    RATE_LIMITED = "rate limited"  # until the tracker's reset time


@dataclass
class Watch:
    """One watched repository, as `fleetctl tracker` shows it."""

    repo: str
    phase: Phase = Phase.POLLING
    next_poll: float = 0.0
    last_poll: float | None = None  # the last successful poll (wall clock)
    errors: int = 0  # consecutive
    error: str | None = None
    polls: int = 0


@dataclass
class Schedule:
    """When each repository is polled next."""

    poll_seconds: float
    watches: dict[str, Watch] = field(default_factory=dict)

    @classmethod
    def of(cls, repos: list[str], poll_seconds: float) -> Schedule:
        return cls(poll_seconds, {repo: Watch(repo) for repo in repos})

    def due(self, now: float) -> list[str]:
        return [repo for repo, watch in self.watches.items() if watch.next_poll <= now]

    def next_due(self) -> float:
        return min((w.next_poll for w in self.watches.values()), default=float("inf"))

    def succeeded(self, repo: str, now: float) -> None:
        watch = self.watches[repo]
        watch.phase, watch.errors, watch.error = Phase.POLLING, 0, None
        watch.last_poll, watch.polls = now, watch.polls + 1
        watch.next_poll = now + self.poll_seconds

    def failed(self, repo: str, error: TrackerError, now: float) -> bool:
        """Back off; True when the error is new (log it once, not at every poll)."""
        watch = self.watches[repo]
        new = str(error) != watch.error
        watch.errors += 1
        watch.error = str(error)
        if isinstance(error, RateLimited):
            watch.phase = Phase.RATE_LIMITED
            watch.next_poll = max(error.reset_at, now + self.poll_seconds)
            return new
        watch.phase = Phase.BACKING_OFF
        # An auth error will not mend by itself: back off to the cap at once.
        doublings = 16 if isinstance(error, AuthError) else watch.errors
        wait = min(self.poll_seconds * 2 ** min(doublings, 16), BACKOFF_MAX_SECONDS)
        watch.next_poll = now + max(wait, self.poll_seconds)
        return new
