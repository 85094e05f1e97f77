"""A GitHub REST stand-in on 127.0.0.1: repositories, issues, comments, labels, pull requests and
review comments, enough of the real API's shape for the tracker, with its strictness.

Strict where GitHub is: every request needs `Authorization: Bearer <token>` (else 401 "Bad
credentials"); list answers carry an ETag and a request with a matching `If-None-Match` gets
304 (which, as on GitHub, costs no rate limit); every answer carries the X-RateLimit-* headers,
and `rate_limit_left = 0` makes every request a 403 "API rate limit exceeded". A repository's
`clone_url` is a bare git repository's file:// URL, so a push really lands somewhere.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.gitrepo import run_git


@dataclass
class Issue:
    number: int
    title: str
    body: str
    labels: list[str]
    state: str = "open"
    comments: list[dict[str, Any]] = field(default_factory=list)
    pull: bool = False  # GitHub lists pull requests among issues


@dataclass
class Pull:
    number: int
    title: str
    head: str
    base: str
    body: str
    draft: bool
    review_comments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Repo:
    full_name: str
    bare: Path
    default_branch: str = "main"
    issues: dict[int, Issue] = field(default_factory=dict)
    pulls: dict[int, Pull] = field(default_factory=dict)
    next_number: int = 1

    def number(self) -> int:
        self.next_number += 1
        return self.next_number - 1


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it (the token is never recorded, only whether it matched)."""

    method: str
    path: str
    status: int
    conditional: bool
    authorised: bool
    body: Any = None


class GitHubServer:
    """The stand-in; use as a context manager. Mutate its repos under `lock`."""

    RATE_LIMIT = 5000

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.seen: list[Seen] = []
        self.lock = threading.RLock()
        self.rate_limit_left = self.RATE_LIMIT
        self.rate_limit_reset = int(time.time()) + 3600
        self.failing: set[str] = set()  # paths answered 500, as a GitHub outage would
        self.retry_after: int | None = None  # answer 403 with Retry-After (a secondary limit)
        self.stalled = threading.Event()  # set: requests hang (until `released` is set)
        self.released = threading.Event()
        self._next_comment = 1000
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- set-up, from the test --------------------------------------------------------------

    def add_repo(self, full_name: str, bare: Path) -> Repo:
        with self.lock:
            repo = Repo(full_name, bare)
            self.repos[full_name] = repo
            return repo

    def add_issue(self, full_name: str, title: str, body: str, labels: list[str]) -> Issue:
        with self.lock:
            repo = self.repos[full_name]
            issue = Issue(repo.number(), title, body, list(labels))
            repo.issues[issue.number] = issue
            return issue

    def add_review_comment(
        self, full_name: str, pull: int, body: str, association: str = "COLLABORATOR"
    ) -> None:
        """A review comment on `pull` by someone whose relation to the repository is
        `association` (GitHub's author_association: OWNER, MEMBER, COLLABORATOR, NONE, ...)."""
        with self.lock:
            comment = self._comment(body, association)
            url = f"{self.url}/repos/{full_name}/pulls/{pull}"
            comment["pull_request_url"] = url
            self.repos[full_name].pulls[pull].review_comments.append(comment)

    def _comment(self, body: str, association: str = "OWNER") -> dict[str, Any]:
        self._next_comment += 1
        return {
            "id": self._next_comment,
            "body": body,
            "user": {"login": "reviewer"},
            "author_association": association,
        }

    def requests_to(self, pattern: str, method: str = "GET") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method and re.fullmatch(pattern, s.path)]

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> GitHubServer:
        server = self

        class Handler(_Handler):
            github = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    # --- the API ----------------------------------------------------------------------------

    def serve(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """(status, JSON answer) of one authorised request."""
        match = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path)
        if match is None or match.group(1) not in self.repos:
            return 404, {"message": "Not Found"}
        repo, rest = self.repos[match.group(1)], match.group(2) or ""
        routes = [
            ("GET", r"", lambda: (200, self._repo_json(repo))),
            ("GET", r"/issues", lambda: (200, self._issues(repo, query))),
            ("GET", r"/issues/(\d+)/comments", lambda n: (200, repo.issues[n].comments)),
            ("POST", r"/issues/(\d+)/comments", lambda n: self._add_comment(repo, n, body)),
            ("POST", r"/issues/(\d+)/labels", lambda n: self._add_labels(repo, n, body)),
            (
                "DELETE",
                r"/issues/(\d+)/labels/([^/]+)",
                lambda n, x: self._unlabel(repo, n, unquote(x)),
            ),
            ("GET", r"/pulls", lambda: (200, self._pulls(repo, query))),
            ("POST", r"/pulls", lambda: self._open_pull(repo, body)),
            ("GET", r"/pulls/(\d+)/comments", lambda n: (200, repo.pulls[n].review_comments)),
            ("GET", r"/pulls/comments", lambda: (200, self._review_comments(repo, query))),
            ("GET", r"/contents/(.+)", lambda name: self._contents(repo, name, query)),
        ]
        for verb, pattern, answer in routes:
            found = re.fullmatch(pattern, rest)
            if verb == method and found:
                args = [int(g) if g.isdigit() else g for g in found.groups()]
                try:
                    return answer(*args)
                except KeyError:
                    return 404, {"message": "Not Found"}
        return 404, {"message": "Not Found"}

    def _repo_json(self, repo: Repo) -> dict[str, Any]:
        return {
            "full_name": repo.full_name,
            "default_branch": repo.default_branch,
            "clone_url": repo.bare.as_uri(),
            "html_url": f"https://github.example/{repo.full_name}",
        }

    def _issue_json(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        data: dict[str, Any] = {
            "number": issue.number,
            "title": issue.title,
            "body": issue.body,
            "state": issue.state,
            "labels": [{"name": name} for name in issue.labels],
            "html_url": f"https://github.example/{repo.full_name}/issues/{issue.number}",
            "comments": len(issue.comments),
        }
        if issue.pull:
            data["pull_request"] = {"url": "..."}
        return data

    def _issues(self, repo: Repo, query: dict[str, str]) -> list[dict[str, Any]]:
        state = query.get("state", "open")
        wanted = set(filter(None, query.get("labels", "").split(",")))
        every = [
            self._issue_json(repo, issue)
            for issue in sorted(repo.issues.values(), key=lambda i: -i.number)
            if (state == "all" or issue.state == state) and wanted <= set(issue.labels)
        ]
        size, page = int(query.get("per_page", "30")), int(query.get("page", "1"))
        return every[(page - 1) * size : page * size]

    def _add_comment(self, repo: Repo, number: int, body: Any) -> tuple[int, Any]:
        comment = self._comment(str(body["body"]))
        repo.issues[number].comments.append(comment)
        return 201, comment

    def _add_labels(self, repo: Repo, number: int, body: Any) -> tuple[int, Any]:
        issue = repo.issues[number]
        issue.labels += [name for name in body["labels"] if name not in issue.labels]
        return 200, [{"name": name} for name in issue.labels]

    def _unlabel(self, repo: Repo, number: int, name: str) -> tuple[int, Any]:
        issue = repo.issues[number]
        if name not in issue.labels:
            return 404, {"message": "Label does not exist"}
        issue.labels.remove(name)
        return 200, [{"name": label} for label in issue.labels]

    def _pull_json(self, repo: Repo, pull: Pull) -> dict[str, Any]:
        owner = repo.full_name.split("/")[0]
        return {
            "number": pull.number,
            "title": pull.title,
            "body": pull.body,
            "draft": pull.draft,
            "state": "open",
            "head": {"ref": pull.head, "label": f"{owner}:{pull.head}"},
            "base": {"ref": pull.base},
            "html_url": f"https://github.example/{repo.full_name}/pull/{pull.number}",
        }

    def _pulls(self, repo: Repo, query: dict[str, str]) -> list[dict[str, Any]]:
        head = query.get("head")
        pulls = [self._pull_json(repo, p) for p in repo.pulls.values()]
        return [p for p in pulls if head is None or p["head"]["label"] == head]

    def _review_comments(self, repo: Repo, query: dict[str, str]) -> list[dict[str, Any]]:
        """Every review comment of the repository, oldest first (newest with direction=desc)."""
        every = sorted(
            (c for pull in repo.pulls.values() for c in pull.review_comments), key=lambda c: c["id"]
        )
        if query.get("sort") == "created" and query.get("direction") == "desc":
            every.reverse()
        return every[: int(query.get("per_page", "30"))]

    def _open_pull(self, repo: Repo, body: Any) -> tuple[int, Any]:
        head, base = str(body["head"]), str(body["base"])
        branches = run_git(repo.bare, "for-each-ref", "--format=%(refname:short)", "refs/heads")
        if head not in branches.split():
            return 422, {"message": "Validation Failed", "errors": [{"field": "head"}]}
        if any(p.head == head for p in repo.pulls.values()):
            return 422, {"message": f"A pull request already exists for {head}."}
        number = repo.number()
        pull = Pull(number, str(body["title"]), head, base, str(body.get("body") or ""), False)
        pull.draft = bool(body.get("draft", False))
        repo.pulls[number] = pull
        repo.issues[number] = Issue(number, pull.title, pull.body, [], pull=True)
        return 201, self._pull_json(repo, pull)

    def _contents(self, repo: Repo, name: str, query: dict[str, str]) -> tuple[int, Any]:
        ref = query.get("ref", repo.default_branch)
        done = subprocess.run(
            ["git", "show", f"{ref}:{name}"], cwd=repo.bare, capture_output=True, timeout=30
        )
        if done.returncode != 0:
            return 404, {"message": "Not Found"}
        return 200, done.stdout  # asked for as application/vnd.github.raw


class _Handler(BaseHTTPRequestHandler):
    github: GitHubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `seen`."""

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        github = self.github
        if github.stalled.is_set():
            github.released.wait(120)
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        authorised = self.headers.get("Authorization") in (
            f"Bearer {github.token}",
            f"token {github.token}",
        )
        conditional = self.headers.get("If-None-Match") is not None
        with github.lock:
            if not authorised:
                status, answer = 401, {"message": "Bad credentials"}
            elif github.retry_after is not None:
                status, answer = 403, {"message": "You have exceeded a secondary rate limit."}
            elif parts.path in github.failing:
                status, answer = 500, {"message": "Server Error"}
            elif github.rate_limit_left <= 0:
                status, answer = 403, {"message": "API rate limit exceeded for user."}
            else:
                status, answer = github.serve(method, parts.path, query, body)
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
            if method == "GET" and status == 200 and self.headers.get("If-None-Match") == etag:
                status, data = 304, b""
            elif authorised and status != 403:
                github.rate_limit_left -= 1
            seen = Seen(method, parts.path, status, conditional, authorised, body)
            github.seen.append(seen)
            left, reset = github.rate_limit_left, github.rate_limit_reset
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-RateLimit-Limit", str(github.RATE_LIMIT))
        self.send_header("X-RateLimit-Remaining", str(max(left, 0)))
        self.send_header("X-RateLimit-Reset", str(reset))
        if method == "GET" and status in (200, 304):
            self.send_header("ETag", etag)
        if github.retry_after is not None:
            self.send_header("Retry-After", str(github.retry_after))
        self.end_headers()
        self.wfile.write(data)
