"""The web process (`fleetd: web`): uvicorn serving the dashboard, the API and /metrics on
the listening socket the supervisor opened, until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket

from loguru import logger

from fleetd.runtime.lifecycle import configure_logging, die_with_parent, set_title
from fleetd.runtime.listen import is_loopback, load_token
from shared.config import FleetConfig

CONTROL_TIMEOUT = 10.0


def run(config: FleetConfig, listener: socket.socket) -> None:
    """The web process's entry point (started by the supervisor with its bound socket)."""
    set_title("fleetd: web")
    configure_logging("web", config.log_level, config.log_json)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor alone decides on Ctrl-C
    die_with_parent(signal.SIGTERM)
    # Imported here, not at module level: the fork server preloads this module for every
    # child, and only this one needs an HTTP stack.
    import zmq.asyncio

    from fleetd.web import api, metrics, pages
    from fleetd.web.app import Web, build_app, templates
    from fleetd.web.control import Control
    from fleetd.web.logic import Access
    from fleetd.web.server import server_for

    paths = config.paths()
    token = load_token(paths.web_token, config.web.token)
    context = zmq.asyncio.Context()
    host = listener.getsockname()[0]
    web = Web(
        control=Control(context, paths.control_socket, CONTROL_TIMEOUT),
        context=context,
        access=Access(token),
        feed_endpoint=paths.feed_endpoint,
        metrics_open=is_loopback(host) or not config.web.metrics_auth,
        templates=templates(),
        sessions_dir=paths.sessions_dir,
        state_dir=paths.root,
    )
    app = build_app(web, [*api.ROUTES, *metrics.ROUTES, *pages.routes()])
    server = server_for(app)
    logger.info("web ready on {}", listener.getsockname())
    try:
        asyncio.run(server.serve(sockets=[listener]))
    finally:
        web.control.close()
        context.destroy(linger=0)
    logger.info("web stopped")
