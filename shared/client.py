"""A client of the control socket: one typed request, one typed reply, always with a timeout."""

from __future__ import annotations

# The C module that `socket` wraps: the probe needs one connect(), and importing socket.py
# (its enum conversions, selectors) costs every fleetctl command six times as much.
import _socket
import contextlib
import errno
from pathlib import Path

import msgspec
import zmq

from shared import messages as m
from shared.errors import DaemonUnavailable, RequestFailed


def _not_running(path: Path) -> DaemonUnavailable:
    return DaemonUnavailable(
        f"fleetd is not running (no control socket answers at {path}); start it with `fleetd`"
    )


def probe(path: Path) -> None:
    """Fail fast, before ZeroMQ, when nothing listens on the socket path."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
        raise _not_running(path) from exc
    except PermissionError as exc:
        raise DaemonUnavailable(
            f"permission denied on {path}: only the user who runs fleetd may control it"
        ) from exc
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise _not_running(path) from exc
        raise DaemonUnavailable(f"cannot reach fleetd at {path}: {exc.strerror}") from exc
    finally:
        sock.close()


class ControlClient:
    """Talks to fleetd over its control socket; one instance per command invocation."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self.context: zmq.Context | None = None
        self.sock: zmq.Socket | None = None
        self.requests = m.CONTROL_REQUESTS
        self.replies = m.CONTROL_REPLIES

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _socket(self) -> zmq.Socket:
        if self.sock is None:
            try:
                str(self.path).encode()  # ZeroMQ takes endpoints as UTF-8 text
            except UnicodeEncodeError:
                raise DaemonUnavailable(f"{str(self.path)!r} is not a UTF-8 path") from None
            probe(self.path)
            self.context = zmq.Context()
            self.sock = self.context.socket(zmq.DEALER)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect("ipc://" + str(self.path))
        return self.sock

    def request(self, message: m.Message) -> m.Message:
        """Send one request and return its reply; an error reply raises RequestFailed."""
        data = self._checked(message)
        sock = self._socket()
        sock.send(data)
        if not sock.poll(int(self.timeout * 1000), zmq.POLLIN):
            # A late reply must not be taken for the next request's: start a new socket.
            self.close()
            raise DaemonUnavailable(
                f"fleetd did not answer within {self.timeout:g} s at {self.path}; "
                "it may be busy or stuck: see its log, or retry with a longer "
                "`fleetctl --request-timeout SECONDS`"
            )
        reply = self.replies.decode(sock.recv())
        if isinstance(reply, m.ErrorReply):
            raise RequestFailed(reply.code, reply.message)
        return reply

    def _checked(self, message: m.Message) -> bytes:
        """The request encoded, or the `bad_request` the daemon would answer, without asking."""
        try:
            data = self.requests.checked(message)
        except msgspec.ValidationError as exc:
            raise RequestFailed("bad_request", f"invalid request: {exc}") from None
        if len(data) > m.MAX_CONTROL_REQUEST_BYTES:
            raise RequestFailed(
                "bad_request",
                f"the request is {len(data) / 2**20:.1f} MiB, over fleetd's limit of "
                f"{m.MAX_CONTROL_REQUEST_BYTES // 2**20} MiB: send fewer or smaller tasks at once",
            )
        return data

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        if self.context is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.context.term()
            self.context = None
