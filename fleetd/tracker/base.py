"""What a tracker is to the fleet: a small interface GitHub implements first (`github.py`), and
a Linear or GitLab tracker could implement later, with the records it hands the logic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from shared.errors import FleetError


class TrackerError(FleetError):
    """A tracker request failed; the message says what to do (and never holds the token)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when the tracker answered


class AuthError(TrackerError):
    """The tracker refused our credentials (401) or their permissions (403)."""


class RateLimited(TrackerError):
    """The tracker's rate limit is spent until `reset_at` (Unix seconds)."""

    def __init__(self, message: str, reset_at: float, status: int | None = None) -> None:
        super().__init__(message, status)
        self.reset_at = reset_at


# Who may ask the fleet for work in a review comment: people with write access, as GitHub's
# author_association says (anyone may comment on a public repository's pull requests).
TRUSTED_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})


@dataclass(frozen=True)
class Comment:
    id: int
    body: str
    author: str = ""
    association: str = ""  # GitHub's author_association
    pull: int | None = None  # a review comment's pull request

    @property
    def trusted(self) -> bool:
        return self.association in TRUSTED_ASSOCIATIONS


@dataclass(frozen=True)
class Issue:
    """An open issue that carries the fleet's label."""

    repo: str
    number: int
    title: str
    body: str
    labels: tuple[str, ...]
    url: str

    @property
    def key(self) -> str:
        """The task's idempotency key: one task per issue, whatever polls or restarts."""
        return f"github:{self.repo}#{self.number}"


@dataclass(frozen=True)
class Repository:
    name: str  # owner/name
    clone_url: str
    default_branch: str
    url: str = ""


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    head: str


@dataclass
class Budget:
    """The rate-limit budget as the tracker's last answer told it."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None


@dataclass(frozen=True)
class NewPull:
    title: str
    head: str
    base: str
    body: str
    draft: bool = False


@dataclass
class Polled:
    """A repository's labelled open issues; `fresh` False if the tracker said nothing changed."""

    issues: list[Issue] = field(default_factory=list)
    fresh: bool = True
    complete: bool = True  # False: more issues than one poll reads (none is taken for gone)


class Tracker(Protocol):
    """The operations the tracker role needs; each raises TrackerError (or a subclass)."""

    budget: Budget

    def repository(self, repo: str) -> Repository: ...

    def labelled_issues(self, repo: str, label: str) -> Polled: ...

    def comments(self, repo: str, number: int) -> list[Comment]: ...

    def workflow(self, repo: str, ref: str) -> str | None: ...

    def comment(self, repo: str, number: int, body: str) -> None: ...

    def add_label(self, repo: str, number: int, label: str) -> None: ...

    def remove_label(self, repo: str, number: int, label: str) -> None: ...

    def take_label(self, repo: str, number: int, label: str) -> bool:
        """Remove `label`; False if the issue did not have it (someone else took it)."""
        ...

    def pull_for(self, repo: str, head: str) -> PullRequest | None: ...

    def open_pull(self, repo: str, pull: NewPull) -> PullRequest: ...

    def review_comments(self, repo: str) -> list[Comment]: ...

    def push_headers(self) -> dict[str, str]: ...
