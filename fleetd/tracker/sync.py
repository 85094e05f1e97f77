"""One poll of one repository, carried out: `logic.plan` decides, this does it, through the
tracker (HTTP) and the queue (control requests, like fleetctl's).

Blocking and sequential, in the tracker process only. Every action that changes the queue or
the tracker is followed by a ledger write, so a crash in between repeats at most that action,
and each action is idempotent where the tracker allows: the task by its key, the pull request
found by its branch before one is opened, the push to the task's own branch forced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec
from loguru import logger

from fleetd.tracker import ledger as ledger_file
from fleetd.tracker import report
from fleetd.tracker.base import AuthError, Issue, NewPull, Repository, Tracker, TrackerError
from fleetd.tracker.logic import (
    Cancel,
    Create,
    Entry,
    Report,
    Rerun,
    Settle,
    plan,
    watched_keys,
)
from fleetd.tracker.prompt import WorkflowError, parse_workflow, render
from fleetd.tracker.push import Pusher
from fleetd.workspace.git import clone_name
from shared import messages as m
from shared.config import GitHubTrackerConfig
from shared.errors import FleetError
from shared.models import TERMINAL_STATES, TaskSpec, TaskView


class Queue(Protocol):
    """The fleet's control socket (`shared.client.ControlClient`)."""

    def request(self, message: m.Message) -> m.Message: ...


@dataclass
class Sync:
    """Carries out the polls of the configured repositories."""

    config: GitHubTrackerConfig
    tracker: Tracker
    queue: Queue
    pusher: Pusher
    ledger_path: Path
    repos_dir: Path  # the workers' clones (a finished worktree may be gone already)
    has_token: bool = True
    ledger: dict[str, Entry] = field(default_factory=dict)
    issues: dict[str, list[Issue]] = field(default_factory=dict)  # the last list of each repo
    repositories: dict[str, Repository] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ledger = ledger_file.load(self.ledger_path)

    def poll(self, repo: str) -> None:
        """Poll `repo` once and act on it; TrackerError (or FleetError) if the poll failed."""
        if not self.has_token:
            raise AuthError(
                f"no GitHub token: the variable {self.config.token_env} (tracker.github."
                "token_env) is not set in fleetd's environment"
            )
        info = self._repository(repo)
        polled = self.tracker.labelled_issues(repo, self.config.label)
        if polled.fresh or repo not in self.issues:
            self.issues[repo] = polled.issues
        issues = self.issues[repo]
        tasks = self._tasks(watched_keys(repo, issues, self.ledger))
        for action in plan(repo, issues, tasks, self.ledger):
            match action:
                case Create(issue=issue):
                    self._create(issue, info)
                case Rerun(issue=issue, task=task):
                    self._rerun(issue, task)
                case Report(issue=issue, task=task):
                    self._report(issue, task, info)
                case Cancel(key=key, task=task):
                    self._cancel(key, task)
                case Settle(key=key, finished_at=finished_at):
                    self._remember(key, reported=finished_at)
        self._follow_reviews(repo, info, tasks)

    # --- the queue -------------------------------------------------------------------------

    def _ask(self, message: m.Message) -> m.Message:
        try:
            return self.queue.request(message)
        except FleetError as exc:
            raise TrackerError(f"fleetd did not take {type(message).__name__}: {exc}") from None

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

    def _remember(self, key: str, **changes: object) -> None:
        self.ledger[key] = msgspec.structs.replace(self.ledger[key], **changes)
        ledger_file.save(self.ledger_path, self.ledger)

    def _enqueue(self, key: str, spec: TaskSpec, entry: Entry) -> int:
        reply = self._ask(m.Enqueue(tasks=[spec]))
        assert isinstance(reply, m.Enqueued)
        self.ledger[key] = msgspec.structs.replace(entry, task=reply.ids[0])
        ledger_file.save(self.ledger_path, self.ledger)
        return reply.ids[0]

    # --- actions ---------------------------------------------------------------------------

    def _create(self, issue: Issue, info: Repository, ref: str | None = None) -> None:
        try:
            workflow = parse_workflow(self.tracker.workflow(issue.repo, info.default_branch))
        except WorkflowError as exc:
            logger.warning("{}: {}; using the built-in template", issue.repo, exc)
            workflow = parse_workflow(None)
        prompt = render(workflow, issue, self.tracker.comments(issue.repo, issue.number))
        spec = self._spec(issue.key, prompt, workflow.options, info, ref, issue.url)
        entry = Entry(repo=issue.repo, number=issue.number, task=0, issue_url=issue.url)
        task = self._enqueue(issue.key, spec, entry)
        logger.info("{}#{} is task {}", issue.repo, issue.number, task)

    def _spec(
        self,
        key: str,
        prompt: str,
        options: dict[str, object],
        info: Repository,
        ref: str | None,
        url: str,
    ) -> TaskSpec:
        fields: dict[str, object] = {"agent": self.config.agent, **options}
        if fields["agent"] == "command":
            fields["argv"] = list(self.config.argv)
        labels = {"tracker": "github", "issue": key.removeprefix("github:"), "issue_url": url}
        try:
            return msgspec.convert(
                {
                    **fields,
                    "prompt": prompt,
                    "repo": info.clone_url,
                    "ref": ref,
                    "key": key,
                    "labels": labels,
                },
                TaskSpec,
            )
        except msgspec.ValidationError as exc:
            raise TrackerError(f"WORKFLOW.md of {info.name} gives a bad option: {exc}") from None

    def _rerun(self, issue: Issue, task: TaskView) -> None:
        reply = self._ask(m.RetryTask(task=task.id))
        logger.info(
            "{}#{} labelled again: task {} is {}",
            issue.repo,
            issue.number,
            task.id,
            getattr(reply, "state", "?"),
        )

    def _cancel(self, key: str, task: TaskView) -> None:
        self._ask(m.CancelTask(task=task.id))
        logger.info("{} was closed or unlabelled: task {} cancelled", key, task.id)

    def _report(self, issue: Issue, task: TaskView, info: Repository) -> None:
        if key_entry := self.ledger.get(issue.key):
            entry = key_entry
        else:  # a ledger lost: the queue still knows the task
            entry = Entry(repo=issue.repo, number=issue.number, task=task.id, issue_url=issue.url)
            self.ledger[issue.key] = entry
        workspace = task.result.workspace if task.result else None
        label = self.config.label
        if task.state == "succeeded" and workspace is not None and workspace.commit:
            branch = workspace.branch
            self.pusher.push(
                self._source(workspace.path, info),
                workspace.commit,
                info.clone_url,
                branch,
                force=True,
            )
            pull = self.tracker.pull_for(issue.repo, branch) or self.tracker.open_pull(
                issue.repo,
                NewPull(
                    title=report.pull_title(issue),
                    head=branch,
                    base=info.default_branch,
                    body=report.pull_body(issue, task),
                    draft=self.config.draft,
                ),
            )
            self.tracker.comment(issue.repo, issue.number, report.opened_comment(task, pull.url))
            outcome = "done"
            changes: dict[str, object] = {
                "branch": branch,
                "pull": pull.number,
                "pull_url": pull.url,
            }
        else:
            why = None
            if task.state == "succeeded":
                why = "the agent finished without changing any file"
            self.tracker.comment(issue.repo, issue.number, report.failure_comment(task, why))
            outcome, changes = "failed", {}
        self.tracker.remove_label(issue.repo, issue.number, label)
        self.tracker.add_label(issue.repo, issue.number, f"{label}:{outcome}")
        self._remember(issue.key, task=task.id, reported=task.finished_at, **changes)
        logger.info("{}#{}: task {} reported ({})", issue.repo, issue.number, task.id, outcome)

    def _source(self, worktree: str, info: Repository) -> Path:
        """Where the task's commit is: its worktree, or (removed) the workers' clone."""
        path = Path(worktree)
        return path if path.is_dir() else self.repos_dir / clone_name(info.clone_url)

    # --- review comments: follow-ups on the same branch --------------------------------------

    def _follow_reviews(self, repo: str, info: Repository, tasks: dict[str, TaskView]) -> None:
        mention = f"@{self.config.label}"
        for key, entry in list(self.ledger.items()):
            if entry.repo != repo:
                continue
            if entry.follows is not None:
                task = tasks.get(key)
                if (
                    task is not None
                    and task.state in TERMINAL_STATES
                    and (entry.reported != task.finished_at)
                ):
                    self._report_follow_up(key, entry, task, info)
                continue
            if entry.pull is None:
                continue
            for comment in self.tracker.review_comments(repo, entry.pull):
                if comment.id in entry.reviews or mention not in comment.body:
                    continue
                self._start_follow_up(key, entry, comment.id, comment.body, info)

    def _start_follow_up(
        self, key: str, entry: Entry, comment: int, body: str, info: Repository
    ) -> None:
        follow_key = f"{key}/review/{comment}"
        prompt = (
            f"A reviewer of the pull request for GitHub issue #{entry.number} of {entry.repo} "
            f"asks for a change:\n\n{body}\n\nMake it in this working tree, on top of the "
            "earlier work; it is committed and pushed to the same pull request for you."
        )
        spec = self._spec(follow_key, prompt, {}, info, entry.branch, entry.issue_url or "")
        new = Entry(
            repo=entry.repo, number=entry.number, task=0, follows=key, issue_url=entry.issue_url
        )
        task = self._enqueue(follow_key, spec, new)
        self._remember(key, reviews=[*entry.reviews, comment])
        logger.info("review comment {} on {}: follow-up task {}", comment, key, task)

    def _report_follow_up(self, key: str, entry: Entry, task: TaskView, info: Repository) -> None:
        parent = self.ledger.get(entry.follows or "")
        workspace = task.result.workspace if task.result else None
        if parent is None or parent.pull is None or parent.branch is None:
            self._remember(key, reported=task.finished_at)
            return
        if task.state == "succeeded" and workspace is not None and workspace.commit:
            self.pusher.push(
                self._source(workspace.path, info),
                workspace.commit,
                info.clone_url,
                parent.branch,
                force=False,
            )
            text = report.pushed_comment(task, workspace.commit)
        else:
            why = (
                "the agent finished without changing any file"
                if task.state == "succeeded"
                else None
            )
            text = report.failure_comment(task, why).split("\n\n")[0]
        self.tracker.comment(entry.repo, parent.pull, text)
        self._remember(
            key,
            reported=task.finished_at,
            branch=parent.branch,
            pull=None,
            pull_url=parent.pull_url,
        )
