"""git's smart HTTP protocol over TLS on 127.0.0.1 (`git http-backend` as CGI) that demands a
token, as GitHub does: a request without `Authorization: Basic base64(x-access-token:TOKEN)`
gets 401. Its certificate is self-signed, made by `openssl` for 127.0.0.1: git trusts it
through GIT_SSL_CAINFO (`ca_file`).

Proves that the tracker's fetches and pushes carry the token over HTTPS the way it gives it to
git (an extra header from git's environment), which a file:// remote cannot show.
"""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit


class GitHttpServer:
    """Serves the bare repositories under `root` at http://127.0.0.1:PORT/<name>."""

    def __init__(self, root: Path, token: str, scratch: Path) -> None:
        self.root = root
        self.ca_file = scratch / "cert.pem"
        self._key = scratch / "key.pem"
        pair = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        self.expected = f"Basic {pair}"
        self.refused = 0
        self._httpd: ThreadingHTTPServer | None = None

    def url(self, name: str) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"https://{host}:{port}/{name}"

    def __enter__(self) -> GitHttpServer:
        server = self

        class Handler(_Handler):
            git = server

        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(self._key), "-out", str(self.ca_file)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, self._key)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    git: GitHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._cgi("GET")

    def do_POST(self) -> None:
        self._cgi("POST")

    def _cgi(self, method: str) -> None:
        if self.headers.get("Authorization") != self.git.expected:
            self.git.refused += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.git.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": method,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": self.headers.get("Content-Type") or "",
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "x-access-token",  # receive-pack refuses anonymous pushes
            "REMOTE_ADDR": "127.0.0.1",
        }
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
