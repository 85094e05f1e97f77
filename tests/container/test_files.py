"""The container files agree with each other and with fleetd (no podman needed: runs in
`make test`). The image itself is tested in test_image.py."""

from __future__ import annotations

import re
from pathlib import Path

from shared.config import load_config

CONTAINERS = Path(__file__).resolve().parents[2] / "containers"


def _dockerfile() -> str:
    return (CONTAINERS / "Dockerfile").read_text()


def _compose() -> str:
    return (CONTAINERS / "compose.yaml").read_text()


def test_the_image_fleet_toml_is_valid_and_stops_before_docker_kills() -> None:
    """fleetd accepts the baked settings, and its whole stop (agents' grace included) ends
    before compose's stop_grace_period runs out."""
    config = load_config({}, CONTAINERS / "fleet.toml")
    assert config.codex.sandbox == "danger-full-access"
    grace = re.search(r"^\s+stop_grace_period: (\d+)s$", _compose(), re.MULTILINE)
    assert grace, "compose.yaml has no stop_grace_period in seconds"
    assert config.worker.grace_seconds < config.supervisor.stop_timeout < int(grace.group(1))


def test_compose_health_check_is_the_image_one() -> None:
    image = re.search(r'^\s+CMD \["fleetctl", (.*)\]$', _dockerfile(), re.MULTILINE)
    compose = re.search(r'^\s+test: \["CMD", "fleetctl", (.*)\]$', _compose(), re.MULTILINE)
    assert image and compose
    assert image.group(1) == compose.group(1)
    for option in ("interval", "timeout", "start-period", "retries"):
        value = re.search(rf"--{option}=(\w+)", _dockerfile())
        assert value, option
        key = option.replace("-", "_")
        assert re.search(rf"^\s+{key}: {value.group(1)}$", _compose(), re.MULTILINE), key


def test_dockerfile_pins_the_codex_version_make_installs() -> None:
    makefile = (CONTAINERS.parent / "Makefile").read_text()
    pinned = re.search(r"^CODEX_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert pinned
    assert f"ARG CODEX_VERSION={pinned.group(1)}\n" in _dockerfile()


def test_dockerfile_pins_the_claude_version_make_installs_and_puts_it_on_path() -> None:
    makefile = (CONTAINERS.parent / "Makefile").read_text()
    pinned = re.search(r"^CLAUDE_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert pinned
    assert f"ARG CLAUDE_VERSION={pinned.group(1)}\n" in _dockerfile()
    assert "COPY --from=claude /opt/claude /opt/claude" in _dockerfile()
    path = re.search(r"^ENV PATH=(\S+) ", _dockerfile(), re.MULTILINE)
    assert path and "/opt/claude/bin" in path.group(1).split(":")


def test_compose_publishes_the_dashboard_on_the_hosts_loopback_only() -> None:
    """The port compose publishes is the one fleetd listens on in the container, and the
    host side is loopback: the dashboard is not offered to the network by default."""
    listen = re.search(r"^\s+- FLEET_WEB_LISTEN=(\S+)$", _compose(), re.MULTILINE)
    published = re.findall(r'^\s+- "([\d.]+):(\d+):(\d+)"$', _compose(), re.MULTILINE)
    assert listen and published == [("127.0.0.1", "8765", "8765")]
    config = load_config({"FLEET_WEB_LISTEN": listen.group(1)}, CONTAINERS / "fleet.toml")
    host, port = config.web.listen.rsplit(":", 1)
    assert host == "0.0.0.0" and port == published[0][2]
