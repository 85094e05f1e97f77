"""Where the dashboard listens: a free explicit port, `off`, the default port taken (a
warning, no dashboard), an explicit address taken or beyond loopback without a token (a
start-up error that says why)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from shared.config import DEFAULT_WEB_LISTEN
from tests.support.fleet import FLEETD, Fleet, running_fleet, short_tempdir, wait_for

pytestmark = pytest.mark.timeout(120)


def env_with(**variables: str) -> dict[str, str]:
    return {**os.environ, **variables}


@contextlib.contextmanager
def holding(address: str) -> Iterator[None]:
    """The port of `address` taken by this test (or already by someone else: taken either
    way)."""
    host, port = address.rsplit(":", 1)
    sock = socket.socket()
    try:
        with contextlib.suppress(OSError):
            sock.bind((host, int(port)))
            sock.listen()
        yield
    finally:
        sock.close()


def failed_start(**variables: str) -> subprocess.CompletedProcess[str]:
    root = short_tempdir()
    env = env_with(FLEET_STATE_DIR=str(root / "s"), **variables)
    return subprocess.run(
        [*FLEETD, "--foreground"], env=env, capture_output=True, text=True, timeout=60
    )


def web_roles(fleet: Fleet) -> list[str]:
    return [p.role for p in fleet.status().processes if p.role == "web"]


def test_off_runs_no_web_process_and_dashboard_says_why() -> None:
    with running_fleet(env=env_with(FLEET_WEB_LISTEN="off")) as fleet:
        assert fleet.status().web_url is None
        assert web_roles(fleet) == []
        shown = fleet.ctl("dashboard", check=False)
        assert shown.returncode == 1 and "web.listen" in shown.stderr
        assert "Traceback" not in shown.stderr
        assert "dashboard:" not in fleet.ctl("status").stdout


def test_the_default_port_taken_is_a_warning_and_no_dashboard() -> None:
    with (
        holding(DEFAULT_WEB_LISTEN),
        running_fleet(env=env_with(FLEET_WEB_LISTEN=DEFAULT_WEB_LISTEN)) as fleet,
    ):
        assert fleet.status().web_url is None
        assert web_roles(fleet) == []
        wait_for(lambda: "running without the dashboard" in fleet.log(), 10, what="the warning")


def test_an_explicit_address_taken_stops_the_start_and_says_why() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    probe.listen()
    address = f"127.0.0.1:{probe.getsockname()[1]}"
    try:
        result = failed_start(FLEET_WEB_LISTEN=address)
    finally:
        probe.close()
    assert result.returncode == 1
    assert f"cannot listen on web.listen {address}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_non_loopback_address_needs_a_configured_token() -> None:
    result = failed_start(FLEET_WEB_LISTEN="0.0.0.0:0")
    assert result.returncode == 1
    assert "set web.token" in result.stderr and "Traceback" not in result.stderr


def test_a_non_loopback_address_with_a_token_serves_it_and_guards_metrics() -> None:
    import httpx

    env = env_with(FLEET_WEB_LISTEN="0.0.0.0:0", FLEET_WEB_TOKEN="a-configured-token-123")
    with running_fleet(env=env) as fleet:
        url = fleet.status().web_url
        assert url is not None
        assert fleet.json("dashboard")["token"] == "a-configured-token-123"
        assert not (fleet.state_dir / "web-token").exists()
        assert httpx.get(url + "metrics", timeout=30).status_code == 401
        scraped = httpx.get(
            url + "metrics",
            headers={"authorization": "Bearer a-configured-token-123"},
            timeout=30,
        )
        assert scraped.status_code == 200
        assert "a-configured-token-123" not in fleet.log()
