"""The web role's decisions, socket-free: who may in (token, login cookie, CSRF), what a query
asks the supervisor for, and which HTTP status a control error becomes."""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import get_args
from urllib.parse import urlencode

import msgspec

from shared import messages as m
from shared.errors import FleetError
from shared.models import BUILT_IN_AGENTS, INT64_MAX, TASK_STATES, AgentKind

SESSION_COOKIE = "fleet_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
PAGE_SIZE = 50
# Any installed adapter's name may be asked for (its form is AgentKind's); the pages offer the
# built-in ones.
AGENT_PATTERN: str = get_args(AgentKind)[1].pattern
AGENT_KINDS: tuple[str, ...] = BUILT_IN_AGENTS

# fleetctl's exit codes and the control errors, as HTTP statuses: 400 usage, 404 unknown task,
# 503 fleet stopping or unreachable.
HTTP_STATUS = {
    "bad_request": 400,
    "not_found": 404,
    "conflict": 409,
    "unavailable": 503,
    "internal": 500,
}


class BadQuery(FleetError):
    """A query parameter that cannot be used; its message says what to send instead."""


class Verdict(enum.Enum):
    """What a request's credentials allow."""

    DENIED = "denied"
    BEARER = "bearer"  # Authorization: Bearer: no browser sends it unasked, so no CSRF risk
    COOKIE = "cookie"  # the login cookie: a mutating request needs the CSRF token too


class Access:
    """The token and what is derived from it: the session cookie and the CSRF token (HMACs,
    so that neither reveals the token and all change when it does)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.session = self._derive(b"session")
        self.csrf = self._derive(b"csrf")

    def _derive(self, purpose: bytes) -> str:
        return hmac.new(self.token.encode(), purpose, hashlib.sha256).hexdigest()

    def token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def verdict(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> Verdict:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_ok(given.strip()):
            return Verdict.BEARER
        cookie = cookies.get(SESSION_COOKIE)
        if cookie is not None and hmac.compare_digest(cookie.encode(), self.session.encode()):
            return Verdict.COOKIE
        return Verdict.DENIED

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())

    def may_change(self, verdict: Verdict, csrf_given: str | None, same_origin: bool) -> bool:
        """Whether a mutating request may go on: a Bearer token always; a cookie only with
        the page's CSRF token and from the dashboard's own origin."""
        if verdict is Verdict.BEARER:
            return True
        return verdict is Verdict.COOKIE and same_origin and self.csrf_ok(csrf_given)


def same_origin(headers: Mapping[str, str]) -> bool:
    """An `Origin` header, when sent, names this host (browsers send it on every POST)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


def _int(name: str, text: str | None, low: int, high: int) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise BadQuery(f"{name} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


FILTERS = ("state", "agent", "repo", "label", "search")


def list_request(query: Mapping[str, str], default_limit: int = PAGE_SIZE) -> m.ListTasks:
    """`?state=&agent=&repo=&label=k=v&search=&limit=&before=` as the supervisor's ListTasks;
    a value it would refuse is a BadQuery that names the parameter."""
    state = query.get("state") or None
    if state is not None and state not in TASK_STATES:
        raise BadQuery(f"unknown state {state!r}: use one of {', '.join(TASK_STATES)}")
    agent = query.get("agent") or None
    if agent is not None and re.match(AGENT_PATTERN, agent) is None:
        raise BadQuery(
            f"bad agent name {agent!r}: one of {', '.join(AGENT_KINDS)} or an adapter's name "
            "(lower-case letters, digits, - and _)"
        )
    label = query.get("label") or None
    if label is not None and ("=" not in label or label.startswith("=")):
        raise BadQuery(f"label takes KEY=VALUE, not {label!r}")
    limit = _int("limit", query.get("limit"), 1, m.LIST_LIMIT_MAX) or default_limit
    before = _int("before", query.get("before"), 1, INT64_MAX)
    ask = m.ListTasks(
        state=state,  # type: ignore[arg-type]
        limit=limit,
        before=before,
        agent=agent,  # type: ignore[arg-type]
        repo=query.get("repo") or None,
        label=label,
        search=query.get("search") or None,
    )
    try:
        m.CONTROL_REQUESTS.checked(ask)
    except msgspec.ValidationError as exc:
        raise BadQuery(f"invalid query: {exc}") from None
    return ask


def next_page_query(ask: m.ListTasks, before: int) -> str:
    """The query of the page after `ask`'s, ending at task `before`, with the same filters."""
    pairs = {name: getattr(ask, name) for name in FILTERS if getattr(ask, name)}
    return urlencode({**pairs, "limit": ask.limit, "before": before})


def event_id(execution: int, seq: int) -> str:
    """An SSE event id: where a reconnecting browser resumes (its `Last-Event-ID`)."""
    return f"{execution}:{seq}"


def resume_position(last_event_id: str | None) -> tuple[int, int]:
    """The (execution, seq) after which to resume; (0, 0) for none or a malformed id."""
    if not last_event_id:
        return (0, 0)
    execution, _, seq = last_event_id.partition(":")
    if not (execution.isdigit() and seq.isdigit()):
        return (0, 0)
    return (min(int(execution), INT64_MAX), min(int(seq), INT64_MAX))


def follows(position: tuple[int, int], execution: int, seq: int) -> bool:
    """Whether an event comes right after `position` (no gap to fetch from the store first)."""
    at_execution, at_seq = position
    return (execution == at_execution and seq == at_seq + 1) or (
        execution > at_execution and seq == 1
    )
