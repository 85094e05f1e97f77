"""One poll of one repository, carried out: `logic.plan` decides, this does it, through the
tracker (HTTP), the queue (control requests, like fleetctl's) and `results.Results`.

Blocking and sequential, in the tracker process only. Every action that changes the queue or
the tracker is followed by a ledger write, so a crash in between repeats at most that action.
One issue's failure (a bad WORKFLOW.md option, a refused push) is logged once and the poll goes
on with the others; a refused token, a spent rate limit or an unreachable fleetd ends the poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec
from loguru import logger

from fleetd.tracker import ledger as ledger_file
from fleetd.tracker.base import (
    AuthError,
    Comment,
    Issue,
    RateLimited,
    Repository,
    Tracker,
    TrackerError,
)
from fleetd.tracker.logic import (
    Action,
    Cancel,
    Claim,
    Create,
    Entry,
    Report,
    Rerun,
    Settle,
    plan,
    watched_keys,
)
from fleetd.tracker.mirror import Mirrors, remote_ref
from fleetd.tracker.prompt import WorkflowError, parse_workflow, render
from fleetd.tracker.results import Results, running_label
from shared import messages as m
from shared.config import GitHubTrackerConfig
from shared.errors import FleetError
from shared.models import TERMINAL_STATES, TaskSpec, TaskView

BUDGET_RESERVE = 20  # requests of the rate limit left unspent until it resets


class Queue(Protocol):
    """The fleet's control socket (`shared.client.ControlClient`)."""

    def request(self, message: m.Message) -> m.Message: ...


class QueueUnavailable(TrackerError):
    """fleetd did not answer or refused a request: the poll ends, to be tried again."""


@dataclass
class Sync:
    """Carries out the polls of the configured repositories."""

    config: GitHubTrackerConfig
    tracker: Tracker
    queue: Queue
    results: Results
    mirrors: Mirrors
    ledger_path: Path
    has_token: bool = True
    ledger: dict[str, Entry] = field(default_factory=dict)
    # The last list of each repository and label.
    issues: dict[tuple[str, str], list[Issue]] = field(default_factory=dict)
    repositories: dict[str, Repository] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # key: the last error logged

    def __post_init__(self) -> None:
        self.ledger = ledger_file.load(self.ledger_path)

    def poll(self, repo: str) -> None:
        """Poll `repo` once and act on it; TrackerError if the poll failed."""
        if not self.has_token:
            raise AuthError(
                f"no GitHub token: the variable {self.config.token_env} (tracker.github."
                "token_env) is not set in fleetd's environment"
            )
        self._check_budget()
        info = self._repository(repo)
        requested, whole = self._list(repo, self.config.label)
        claimed, whole_claimed = self._list(repo, running_label(self.config))
        tasks = self._tasks(watched_keys(repo, requested + claimed, self.ledger))
        complete = whole and whole_claimed
        for action in plan(repo, requested, claimed, tasks, self.ledger, complete):
            self._isolated(_key_of(action), lambda a=action: self._act(a, info))
        self._follow_ups(repo, info, tasks)

    def _check_budget(self, now: float | None = None) -> None:
        """Keep a reserve of the rate limit rather than spend it to the last request: a poll
        takes several, and a spent budget makes GitHub refuse (and, repeated, flag) us."""
        budget = self.tracker.budget
        now = time.time() if now is None else now
        if budget.remaining is None or budget.remaining >= BUDGET_RESERVE:
            return
        if budget.reset_at is not None and budget.reset_at > now:
            raise RateLimited(
                f"{budget.remaining} GitHub requests left, under the tracker's reserve of "
                f"{BUDGET_RESERVE}: waiting for the reset",
                float(budget.reset_at),
            )

    def _list(self, repo: str, label: str) -> tuple[list[Issue], bool]:
        """The open issues with `label` (the last answer when the tracker says it is the
        same), and whether that is all of them."""
        polled = self.tracker.labelled_issues(repo, label)
        if polled.fresh or (repo, label) not in self.issues:
            self.issues[(repo, label)] = polled.issues
        return self.issues[(repo, label)], polled.complete

    def _act(self, action: Action, info: Repository) -> None:
        match action:
            case Create(issue=issue, claimed=claimed):
                if claimed or self._claim(issue):
                    self._create(issue, info)
            case Claim(issue=issue):
                self._claim(issue)
            case Rerun(issue=issue, task=task):
                if self._claim(issue):
                    self._ask(m.RetryTask(task=task.id))
                    self._remember(issue.key, reported=None)  # in flight again: watched
                    logger.info("{} labelled again: task {} runs again", issue.key, task.id)
            case Report(issue=issue, task=task):
                self._report(issue, task, info)
            case Cancel(key=key, task=task):
                self._ask(m.CancelTask(task=task.id))
                logger.info("{} was closed or unlabelled: task {} cancelled", key, task.id)
            case Settle(key=key, finished_at=finished_at):
                self._remember(key, reported=finished_at)

    def _isolated(self, key: str, step: Callable[[], None]) -> None:
        """Run one issue's step; its own failure is logged once (per text) and passed over."""
        try:
            step()
        except (AuthError, RateLimited, QueueUnavailable):
            raise
        except (TrackerError, FleetError) as exc:
            if self.failures.get(key) != str(exc):
                logger.warning("tracker: {}: {}", key, exc)
                self.failures[key] = str(exc)
        else:
            self.failures.pop(key, None)

    # --- the queue and the ledger ----------------------------------------------------------

    def _ask(self, message: m.Message) -> m.Message:
        try:
            return self.queue.request(message)
        except FleetError as exc:
            name = type(message).__name__
            raise QueueUnavailable(f"fleetd did not take {name}: {exc}") from None

    def _tasks(self, keys: list[str]) -> dict[str, TaskView]:
        if not keys:
            return {}
        reply = self._ask(m.FindTasks(keys=keys))
        assert isinstance(reply, m.TaskList)
        return {task.spec.key: task for task in reply.tasks if task.spec.key is not None}

    def _repository(self, repo: str) -> Repository:
        if repo not in self.repositories:
            self.repositories[repo] = self.tracker.repository(repo)
        return self.repositories[repo]

    def _remember(self, key: str, entry: Entry | None = None, **changes: object) -> None:
        self.ledger[key] = msgspec.structs.replace(entry or self.ledger[key], **changes)
        ledger_file.save(self.ledger_path, self.ledger)

    def _enqueue(self, key: str, spec: TaskSpec, entry: Entry) -> int:
        reply = self._ask(m.Enqueue(tasks=[spec]))
        assert isinstance(reply, m.Enqueued)
        self._remember(key, entry, task=reply.ids[0])
        return reply.ids[0]

    # --- issues in -------------------------------------------------------------------------

    def _claim(self, issue: Issue) -> bool:
        """Take the label off (the claim: only one tracker's removal succeeds) and put the
        running label on; False if another tracker (or a person) took it first."""
        if not self.tracker.take_label(issue.repo, issue.number, self.config.label):
            logger.info("{}: its label was taken before this tracker could: left alone", issue.key)
            return False
        if issue.key not in self.ledger:
            entry = Entry(repo=issue.repo, number=issue.number, task=0, issue_url=issue.url)
            self._remember(issue.key, entry)
        self.tracker.add_label(issue.repo, issue.number, running_label(self.config))
        return True

    def _create(self, issue: Issue, info: Repository) -> None:
        try:
            workflow = parse_workflow(self.tracker.workflow(issue.repo, info.default_branch))
        except WorkflowError as exc:
            logger.warning("{}: {}; using the built-in template", issue.repo, exc)
            workflow = parse_workflow(None)
        prompt = render(workflow, issue, self.tracker.comments(issue.repo, issue.number))
        source = self.mirrors.update(info)
        spec = self._spec(issue.key, prompt, workflow.options, source, None, issue.url)
        task = self._enqueue(issue.key, spec, self.ledger[issue.key])
        logger.info("{} is task {}", issue.key, task)

    def _spec(
        self,
        key: str,
        prompt: str,
        options: dict[str, object],
        source: Path,
        ref: str | None,
        url: str,
    ) -> TaskSpec:
        fields: dict[str, object] = {"agent": self.config.agent, **options}
        if fields["agent"] == "command":
            fields["argv"] = list(self.config.argv)
        labels = {"tracker": "github", "issue": key.removeprefix("github:"), "issue_url": url}
        fields.update(prompt=prompt, repo=str(source), ref=ref, key=key, labels=labels)
        try:
            return msgspec.convert(fields, TaskSpec)
        except msgspec.ValidationError as exc:
            raise TrackerError(f"cannot make a task of {key}: {exc}") from None

    # --- results out -----------------------------------------------------------------------

    def _report(self, issue: Issue, task: TaskView, info: Repository) -> None:
        entry = self.ledger.get(issue.key) or Entry(  # a ledger lost: the queue still knows
            repo=issue.repo, number=issue.number, task=task.id, issue_url=issue.url
        )
        changes = self.results.report(issue, task, info)
        self._remember(issue.key, entry, task=task.id, reported=task.finished_at, **changes)
        logger.info("{}: task {} reported ({})", issue.key, task.id, task.state)

    # --- review comments: follow-ups on the same branch --------------------------------------

    def _follow_ups(self, repo: str, info: Repository, tasks: dict[str, TaskView]) -> None:
        for key, entry in list(self.ledger.items()):
            task = tasks.get(key)
            if entry.repo != repo or entry.follows is None or task is None:
                continue
            if task.state in TERMINAL_STATES and entry.reported != task.finished_at:
                self._isolated(
                    key, lambda k=key, e=entry, t=task: self._follow_up_done(k, e, t, info)
                )
        pulls = {e.pull: key for key, e in self.ledger.items() if e.repo == repo and e.pull}
        if not pulls:
            return
        mention = f"@{self.config.label}"
        for comment in self.tracker.review_comments(repo):
            key = pulls.get(comment.pull)
            if key is None or mention not in comment.body:
                continue
            if comment.id in self.ledger[key].reviews:
                continue
            if not comment.trusted:
                logger.info(
                    "{}: review comment {} by {} ({}) ignored: no write access",
                    key,
                    comment.id,
                    comment.author,
                    comment.association or "unknown",
                )
                self._remember(key, reviews=[*self.ledger[key].reviews, comment.id])
                continue
            self._isolated(key, lambda k=key, c=comment: self._start_follow_up(k, c, info))

    def _start_follow_up(self, key: str, comment: Comment, info: Repository) -> None:
        entry = self.ledger[key]
        follow_key = f"{key}/review/{comment.id}"
        prompt = (
            f"A reviewer of the pull request for GitHub issue #{entry.number} of {entry.repo} "
            f"asks for a change:\n\n{comment.body}\n\nMake it in this working tree, on top of "
            "the earlier work; it is committed and pushed to the same pull request for you."
        )
        assert entry.branch is not None, "a pull request's entry has its branch"
        source = self.mirrors.update(info, (entry.branch,))
        ref = remote_ref(entry.branch)  # as pushed, with whatever a reviewer added since
        # The agent's thread goes on from the latest run on this pull request (resumed when the
        # agent can: codex, claude), the working tree from the branch as pushed.
        latest = max(
            [entry.task, *(e.task for e in self.ledger.values() if e.follows == key and e.task)]
        )
        options = {"continues": latest} if latest else {}
        spec = self._spec(follow_key, prompt, options, source, ref, entry.issue_url or "")
        new = Entry(
            repo=entry.repo,
            number=entry.number,
            task=0,
            follows=key,
            issue_url=entry.issue_url,
            pull_url=entry.pull_url,
        )
        task = self._enqueue(follow_key, spec, new)
        self._remember(key, reviews=[*entry.reviews, comment.id])
        logger.info("review comment {} on {}: follow-up task {}", comment.id, key, task)

    def _follow_up_done(self, key: str, entry: Entry, task: TaskView, info: Repository) -> None:
        parent = self.ledger.get(entry.follows or "")
        if parent is not None and parent.pull is not None and parent.branch is not None:
            self.results.report_follow_up(entry, parent, task, info)
        self._remember(key, reported=task.finished_at)


def _key_of(action: Action) -> str:
    return action.key if isinstance(action, Cancel | Settle) else action.issue.key
