"""The web role's TCP listening socket and its access token, made by the supervisor before any
child starts: a taken port is known at start-up, a restarted web process serves the same
socket, and `fleetctl dashboard` finds the token as soon as fleetd answers."""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import socket
from pathlib import Path

from loguru import logger

from shared.config import DEFAULT_WEB_LISTEN, WebConfig
from shared.errors import ConfigError

BACKLOG = 128


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`) as a host and a port; ConfigError if it is neither."""
    host, sep, port_text = listen.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            f"web.listen {listen!r} is not HOST:PORT (e.g. 127.0.0.1:8765), nor `off`"
        )
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_web_listener(web: WebConfig) -> socket.socket | None:
    """The bound, listening socket of `web.listen`; None when it is `off`, or when it is the
    default address and that cannot be bound (taken, most often: a warning says so). Any
    other address that cannot be bound is a ConfigError that says why; so is a non-loopback
    one without a token."""
    if web.listen.strip().lower() == "off":
        return None
    host, port = parse_listen(web.listen)
    if not is_loopback(host) and not web.token:
        raise ConfigError(
            f"web.listen {web.listen} is reachable beyond this machine: set web.token "
            "(FLEET_WEB_TOKEN) to the token clients must send, or listen on 127.0.0.1"
        )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"web.listen {web.listen}: unknown host ({exc.strerror})") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if web.listen == DEFAULT_WEB_LISTEN:
            # Nobody asked for this address: fleetd runs on without its dashboard.
            why = (
                "is taken" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            )
            logger.warning(
                "the dashboard's address {} {}: running without the dashboard; "
                "set web.listen (FLEET_WEB_LISTEN, --web-listen) to another address",
                web.listen,
                why,
            )
            return None
        raise ConfigError(
            f"cannot listen on web.listen {web.listen}: {exc.strerror}; "
            "choose another address, or `off`"
        ) from exc
    return sock


def listener_url(sock: socket.socket) -> str:
    """The dashboard's URL for a bound socket (its real port when 0 was asked)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"http://{shown}:{port}/"


def load_token(path: Path, configured: str | None) -> str:
    """The configured token, else the one in `path`, else a new one written there (0600)."""
    if configured:
        return configured
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if token:
            return token
        path.unlink()  # an empty file (a crash between create and write): make a new one
        return load_token(path, None)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token
