"""Results back to the tracker: a finished task's branch pushed, its pull request opened (or
found), the issue commented and labelled; a follow-up's commit pushed onto its pull request.

Each step is idempotent where the tracker allows, so a report cut short (a crash, a failed
request) is simply made again at the next poll: the push to the task's own branch is forced,
the pull request is looked for by its branch before one is opened, labels are set, not
toggled. What may repeat is a comment.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetd.tracker import report
from fleetd.tracker.base import Issue, NewPull, PullRequest, Repository, Tracker
from fleetd.tracker.logic import Entry
from fleetd.tracker.mirror import Mirrors
from fleetd.tracker.push import Pusher
from shared.config import GitHubTrackerConfig
from shared.models import TaskView, WorkspaceResult

NO_CHANGE = "the agent finished without changing any file"
OUTCOMES = ("done", "failed")


@dataclass
class Results:
    config: GitHubTrackerConfig
    tracker: Tracker
    pusher: Pusher
    mirrors: Mirrors  # the tasks ran on these clones: their commits are there

    def report(self, issue: Issue, task: TaskView, info: Repository) -> dict[str, object]:
        """Tell the issue how its task ended; the ledger fields to remember."""
        workspace = _committed(task)
        changes: dict[str, object] = {}
        if workspace is not None:
            pull = self._propose(issue, task, info, workspace)
            self.tracker.comment(issue.repo, issue.number, report.opened_comment(task, pull.url))
            outcome = "done"
            changes = {"branch": workspace.branch, "pull": pull.number, "pull_url": pull.url}
        else:
            why = NO_CHANGE if task.state == "succeeded" else None
            text = report.failure_comment(task, why, self.config.label)
            self.tracker.comment(issue.repo, issue.number, text)
            outcome = "failed"
        self._label(issue, outcome)
        return changes

    def _propose(
        self, issue: Issue, task: TaskView, info: Repository, workspace: WorkspaceResult
    ) -> PullRequest:
        assert workspace.commit is not None
        source = self.mirrors.checked(info)
        # Forced: a rerun starts again from the base, and the branch is the task's own.
        self.pusher.push(source, workspace.commit, info.clone_url, workspace.branch, force=True)
        found = self.tracker.pull_for(issue.repo, workspace.branch)
        if found is not None:
            return found
        new = NewPull(
            title=report.pull_title(issue),
            head=workspace.branch,
            base=info.default_branch,
            body=report.pull_body(issue, task),
            draft=self.config.draft,
        )
        return self.tracker.open_pull(issue.repo, new)

    def _label(self, issue: Issue, outcome: str) -> None:
        """The running label gives way to the outcome's. The label itself stays if someone
        applied it again meanwhile: that asks for another run, which the next poll starts."""
        label = self.config.label
        self.tracker.remove_label(issue.repo, issue.number, running_label(self.config))
        for other in OUTCOMES:
            if other != outcome:
                self.tracker.remove_label(issue.repo, issue.number, f"{label}:{other}")
        self.tracker.add_label(issue.repo, issue.number, f"{label}:{outcome}")

    def report_follow_up(
        self, entry: Entry, parent: Entry, task: TaskView, info: Repository
    ) -> None:
        """Push a follow-up's commit onto its parent's branch and say so on the pull request."""
        assert parent.pull is not None and parent.branch is not None
        workspace = _committed(task)
        if workspace is not None:
            assert workspace.commit is not None
            source = self.mirrors.checked(info)
            # Not forced: the follow-up started from the pushed branch, and a reviewer's own
            # commits pushed since must not be lost (the push fails, and the comment says so).
            self.pusher.push(source, workspace.commit, info.clone_url, parent.branch, force=False)
            text = report.pushed_comment(task, workspace.commit)
        else:
            why = NO_CHANGE if task.state == "succeeded" else None
            text = report.failure_comment(task, why)
        self.tracker.comment(entry.repo, parent.pull, text)


def running_label(config: GitHubTrackerConfig) -> str:
    """The label a tracker puts in place of the label when it takes the issue."""
    return f"{config.label}:running"


def _committed(task: TaskView) -> WorkspaceResult | None:
    """The workspace of a task that succeeded with a commit; None otherwise."""
    workspace = task.result.workspace if task.result else None
    if task.state != "succeeded" or workspace is None or not workspace.commit:
        return None
    return workspace
