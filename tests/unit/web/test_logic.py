"""The web role's decisions without a server: the token and what it admits, CSRF, queries,
SSE resume positions."""

from __future__ import annotations

import stat
from pathlib import Path

import msgspec
import pytest

from fleetd.runtime.listen import is_loopback, load_token, parse_listen
from fleetd.web.logic import (
    SESSION_COOKIE,
    Access,
    BadQuery,
    Verdict,
    follows,
    list_request,
    resume_position,
    same_origin,
)
from fleetd.web.openapi import openapi_document
from shared.errors import ConfigError

TOKEN = "s3cret-token"


def test_a_token_is_made_once_private_and_then_reread(tmp_path: Path) -> None:
    path = tmp_path / "web-token"
    first = load_token(path, None)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_token(path, None) == first


def test_a_configured_token_wins_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "web-token"
    assert load_token(path, "given") == "given"
    assert not path.exists()


def test_an_empty_token_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "web-token"
    path.write_text("")
    assert load_token(path, None)


def test_bearer_and_cookie_admit_and_nothing_else_does() -> None:
    access = Access(TOKEN)
    assert access.verdict({"authorization": f"Bearer {TOKEN}"}, {}) is Verdict.BEARER
    assert access.verdict({}, {SESSION_COOKIE: access.session}) is Verdict.COOKIE
    assert access.verdict({}, {}) is Verdict.DENIED
    assert access.verdict({"authorization": "Bearer nope"}, {}) is Verdict.DENIED
    assert access.verdict({}, {SESSION_COOKIE: TOKEN}) is Verdict.DENIED  # not the token itself
    assert TOKEN not in (access.session, access.csrf)


def test_a_cookie_changes_nothing_without_the_csrf_token_from_this_origin() -> None:
    access = Access(TOKEN)
    assert access.may_change(Verdict.BEARER, None, same_origin=False)
    assert not access.may_change(Verdict.COOKIE, None, same_origin=True)
    assert not access.may_change(Verdict.COOKIE, "forged", same_origin=True)
    assert not access.may_change(Verdict.COOKIE, access.csrf, same_origin=False)
    assert access.may_change(Verdict.COOKIE, access.csrf, same_origin=True)
    assert not access.may_change(Verdict.DENIED, access.csrf, same_origin=True)


def test_same_origin_compares_the_origin_with_the_host() -> None:
    assert same_origin({"host": "127.0.0.1:8765"})
    assert same_origin({"host": "127.0.0.1:8765", "origin": "http://127.0.0.1:8765"})
    assert not same_origin({"host": "127.0.0.1:8765", "origin": "http://evil.example"})


def test_list_queries_become_list_requests() -> None:
    ask = list_request({"state": "running", "limit": "7", "before": "90"})
    assert (ask.state, ask.limit, ask.before) == ("running", 7, 90)
    assert list_request({}).limit == 50
    for bad in ({"state": "sleeping"}, {"limit": "0"}, {"limit": "x"}, {"before": "-3"}):
        with pytest.raises(BadQuery):
            list_request(bad)


def test_any_adapter_name_filters_and_a_malformed_one_is_refused() -> None:
    # Adapters are plug-ins: `echo` (the example adapter) is as good a filter as `codex`.
    assert list_request({"agent": "echo"}).agent == "echo"
    assert list_request({"agent": "codex"}).agent == "codex"
    for bad in ("Codex", "a b", "-x", "x" * 41):
        with pytest.raises(BadQuery, match="bad agent name"):
            list_request({"agent": bad})


def test_the_openapi_document_encodes_as_json() -> None:
    document = msgspec.json.decode(msgspec.json.encode(openapi_document()))
    assert document["openapi"].startswith("3.")


def test_resume_positions_from_last_event_ids() -> None:
    assert resume_position("4:17") == (4, 17)
    assert resume_position(None) == (0, 0)
    assert resume_position("garbage") == (0, 0)
    assert follows((4, 17), 4, 18)
    assert follows((4, 17), 5, 1)
    assert not follows((4, 17), 4, 19)


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("8765", "host:", "host:99999", ":80"):
        with pytest.raises(ConfigError):
            parse_listen(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
