"""GitHub's REST API as a `Tracker`, with the standard library's urllib.

urllib rather than an HTTP client library: the tracker makes a few small JSON requests per
poll, one at a time, from its own process; it needs timeouts, headers and status codes, all of
which urllib has, and no dependency is added. Conditional requests: every list is asked for
with the ETag of its last answer, and a 304 (which GitHub does not count against the rate
limit) returns the kept answer. The token goes only into the Authorization header; no error
text, log line or stored value holds it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from fleetd.tracker.base import (
    AuthError,
    Budget,
    Comment,
    Issue,
    NewPull,
    Polled,
    PullRequest,
    RateLimited,
    Repository,
    TrackerError,
)

TIMEOUT_SECONDS = 30.0
PAGE_SIZE = 100
MAX_PAGES = 10  # a thousand labelled open issues per repository and label
API_VERSION = "2022-11-28"


class GitHub:
    """One GitHub (or GitHub Enterprise) API endpoint and token."""

    def __init__(
        self, api_url: str, token: str, timeout: float = TIMEOUT_SECONDS, page_size: int = PAGE_SIZE
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.page_size = page_size
        self.budget = Budget()
        self._etags: dict[str, tuple[str, Any]] = {}  # url: (etag, the answer it stands for)
        # Everything but the API's host: urlopen would otherwise follow a redirect elsewhere
        # with our Authorization header.
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __repr__(self) -> str:
        return f"GitHub({self.api_url!r})"  # never the token

    # --- the Tracker operations ------------------------------------------------------------

    def repository(self, repo: str) -> Repository:
        data, _ = self._call("GET", f"/repos/{repo}")
        return Repository(
            name=repo,
            clone_url=str(data["clone_url"]),
            default_branch=str(data["default_branch"]),
            url=str(data.get("html_url") or ""),
        )

    def labelled_issues(self, repo: str, label: str) -> Polled:
        query = urllib.parse.urlencode({"labels": label, "state": "open"})
        data, fresh, complete = self._all_pages(f"/repos/{repo}/issues?{query}")
        issues = [
            Issue(
                repo=repo,
                number=int(item["number"]),
                title=str(item.get("title") or ""),
                body=str(item.get("body") or ""),
                labels=tuple(str(lab["name"]) for lab in item.get("labels") or []),
                url=str(item.get("html_url") or ""),
            )
            for item in data
            if "pull_request" not in item  # GitHub lists pull requests among the issues
        ]
        return Polled(issues=issues, fresh=fresh, complete=complete)

    def _all_pages(self, path: str) -> tuple[list[Any], bool, bool]:
        """(every item, fresh, complete): the first page asked for conditionally, the others
        after it, up to MAX_PAGES (complete is False past that)."""
        first = f"{path}&per_page={self.page_size}"
        data, fresh = self._call("GET", first, conditional=True)
        items, page = list(data), 1
        if not fresh:
            return items, False, True
        while len(data) == self.page_size:
            if page == MAX_PAGES:
                return items, True, False
            page += 1
            data, _ = self._call("GET", f"{first}&page={page}")
            items += data
        if page > 1:  # a later page may change while the first does not: ask afresh next time
            self._etags.pop(self.api_url + first, None)
        return items, True, True

    def comments(self, repo: str, number: int) -> list[Comment]:
        data, _ = self._call("GET", f"/repos/{repo}/issues/{number}/comments?per_page=100")
        return [_comment(item) for item in data]

    def review_comments(self, repo: str) -> list[Comment]:
        """The repository's latest review comments, newest first: one request for every pull
        request, asked for conditionally."""
        query = "sort=created&direction=desc&per_page=100"
        data, _ = self._call("GET", f"/repos/{repo}/pulls/comments?{query}", conditional=True)
        return [_comment(item) for item in data]

    def workflow(self, repo: str, ref: str) -> str | None:
        """WORKFLOW.md of `ref`, or None when the repository has none."""
        path = f"/repos/{repo}/contents/WORKFLOW.md?ref={urllib.parse.quote(ref)}"
        try:
            data, _ = self._call("GET", path, raw=True)
        except TrackerError as exc:
            if exc.status == 404:
                return None
            raise
        return data.decode("utf-8", "replace")

    def comment(self, repo: str, number: int, body: str) -> None:
        self._call("POST", f"/repos/{repo}/issues/{number}/comments", {"body": body})

    def add_label(self, repo: str, number: int, label: str) -> None:
        self._call("POST", f"/repos/{repo}/issues/{number}/labels", {"labels": [label]})

    def remove_label(self, repo: str, number: int, label: str) -> None:
        self.take_label(repo, number, label)  # not there: what we wanted

    def take_label(self, repo: str, number: int, label: str) -> bool:
        """DELETE answers 404 when the issue has no such label: of two trackers removing it at
        once, one is told it was gone, and that is the claim."""
        name = urllib.parse.quote(label, safe="")
        try:
            self._call("DELETE", f"/repos/{repo}/issues/{number}/labels/{name}")
        except TrackerError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def pull_for(self, repo: str, head: str) -> PullRequest | None:
        owner = repo.split("/")[0]
        query = urllib.parse.urlencode({"head": f"{owner}:{head}", "state": "all"})
        data, _ = self._call("GET", f"/repos/{repo}/pulls?{query}")
        return _pull(data[0]) if data else None

    def open_pull(self, repo: str, pull: NewPull) -> PullRequest:
        body = {
            "title": pull.title,
            "head": pull.head,
            "base": pull.base,
            "body": pull.body,
            "draft": pull.draft,
        }
        data, _ = self._call("POST", f"/repos/{repo}/pulls", body)
        return _pull(data)

    def push_headers(self) -> dict[str, str]:
        """The header git sends to push over HTTPS (GitHub takes the token as basic auth)."""
        import base64

        pair = base64.b64encode(f"x-access-token:{self._token}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}

    # --- HTTP ------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        conditional: bool = False,
        raw: bool = False,
    ) -> tuple[Any, bool]:
        """(the decoded answer, True unless it is the kept answer of a 304)."""
        url = self.api_url + path
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github.raw" if raw else "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "agent-fleet",
        }
        kept = self._etags.get(url) if conditional else None
        if kept is not None:
            headers["If-None-Match"] = kept[0]
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                self._note_budget(answer.headers)
                payload = answer.read()
                etag = answer.headers.get("ETag")
        except urllib.error.HTTPError as exc:
            self._note_budget(exc.headers)
            if exc.code == 304 and kept is not None:
                return kept[1], False
            raise self._failure(method, path, exc) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackerError(f"cannot reach {self.api_url}: {reason}") from None
        if raw:
            return payload, True
        decoded = json.loads(payload) if payload else None
        if conditional and etag:
            self._etags[url] = (etag, decoded)
        return decoded, True

    def _note_budget(self, headers: Any) -> None:
        if headers is None:
            return
        for name, attribute in (
            ("X-RateLimit-Limit", "limit"),
            ("X-RateLimit-Remaining", "remaining"),
            ("X-RateLimit-Reset", "reset_at"),
        ):
            value = headers.get(name)
            if value is not None and value.strip().isdigit():
                setattr(self.budget, attribute, int(value))

    def _failure(self, method: str, path: str, exc: urllib.error.HTTPError) -> TrackerError:
        where = f"{method} {path.split('?')[0]}"
        try:
            message = str(json.loads(exc.read() or b"{}").get("message") or "")
        except (ValueError, AttributeError, OSError):
            message = ""
        message = message.replace(self._token, "***") if self._token else message
        code = exc.code
        if code == 401:
            return AuthError(
                f"GitHub refused the token ({where}: 401 {message or 'Bad credentials'}): "
                "check the variable named by tracker.github.token_env",
                code,
            )
        retry_after = (exc.headers.get("Retry-After") or "").strip() if exc.headers else ""
        if code in (403, 429) and retry_after.isdigit():  # a secondary rate limit
            reset = time.time() + int(retry_after)
            return RateLimited(f"GitHub asks to slow down ({where}): {message}", reset, code)
        if code in (403, 429) and (self.budget.remaining == 0 or "rate limit" in message.lower()):
            reset = float(self.budget.reset_at or time.time() + 60)
            return RateLimited(f"GitHub's rate limit is spent ({where}): {message}", reset, code)
        if code == 403:
            return AuthError(
                f"GitHub refused {where} (403 {message}): the token lacks a permission; "
                "see the README's tracker section",
                code,
            )
        return TrackerError(f"GitHub answered {where} with {code} {message}".strip(), code)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _comment(item: Any) -> Comment:
    user = item.get("user") or {}
    pull_url = str(item.get("pull_request_url") or "")
    tail = pull_url.rstrip("/").rsplit("/", 1)[-1]
    return Comment(
        id=int(item["id"]),
        body=str(item.get("body") or ""),
        author=str(user.get("login") or ""),
        association=str(item.get("author_association") or ""),
        pull=int(tail) if tail.isdigit() else None,
    )


def _pull(item: Any) -> PullRequest:
    return PullRequest(
        number=int(item["number"]),
        url=str(item.get("html_url") or ""),
        head=str(item["head"]["ref"]),
    )
