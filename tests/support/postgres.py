"""A real PostgreSQL cluster for the tests: initdb'd in a temporary directory, on loopback.

One cluster serves the whole session (`pg_cluster`); each test that needs a database gets a
fresh one (`pg_url`), copied from an empty template, which takes milliseconds. The cluster
runs as the `postgres` user when the tests run as root (PostgreSQL refuses to run as root),
listens on 127.0.0.1 at a free port and on a Unix socket in its own directory, with fsync
on: durability is what the queue tests are about.

The superuser `fleet` has a known password (`PASSWORD`), and the URLs carry it, so that
tests can check it never reaches a log, an error or `fleetctl` output.

Outside CI a missing PostgreSQL skips the tests that ask for it; under CI it fails them
(`.ci/run` installs Debian's `postgresql`), as tests/support/requires.py does for tools.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.requires import IN_CI

USER = "fleet"
PASSWORD = "pg-test-secret-4f9c2e"  # a known secret: tests grep outputs for it
TEMPLATE = "fleet_template"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def pg_bin_dir() -> Path | None:
    """The directory of initdb/pg_ctl/postgres: $FLEET_TEST_PG_BIN, Debian's newest, or PATH."""
    if os.environ.get("FLEET_TEST_PG_BIN"):
        return Path(os.environ["FLEET_TEST_PG_BIN"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgCluster:
    """One PostgreSQL cluster in a temporary directory; `start`, `stop`, `restart`, and
    fresh databases (`create_database`)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="flpg", dir="/tmp"))
        self.data = self.root / "data"
        self.socket_dir = self.root  # short: a Unix socket path has 108 bytes at most
        self.log = self.root / "postgres.log"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self._names = itertools.count(1)
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",  # the socket is in a directory only we can reach
            "--auth-host=scram-sha-256",  # TCP needs the password: URLs carry a secret
            "-E",
            "UTF8",
            "--locale=C",
        )
        pwfile.unlink()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "on",
            "synchronous_commit": "on",
            "max_connections": "300",
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    # --- life ------------------------------------------------------------------------------

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, check=True, capture_output=True, text=True, timeout=START_TIMEOUT
        )

    def start(self) -> None:
        """Start the postmaster and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-s", "start")
        deadline = time.monotonic() + START_TIMEOUT
        while not self._accepts():
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not start; see {self.log}")
            time.sleep(0.05)

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (first line of postmaster.pid), or None."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self, mode: str = "fast") -> None:
        """Stop the postmaster by its pid: SIGINT is PostgreSQL's fast shutdown (clients are
        disconnected), SIGQUIT its immediate one (a crash, recovered at the next start)."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        (self.data / "postmaster.pid").unlink(missing_ok=True)

    def restart(self, mode: str = "fast", down_seconds: float = 0.0) -> None:
        """Stop, stay down `down_seconds`, start again on the same port."""
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _accepts(self) -> bool:
        try:
            self.admin("SELECT 1")
        except Exception:
            return False
        return True

    # --- databases ---------------------------------------------------------------------------

    def url(self, dbname: str = "postgres", password: bool = True) -> str:
        """A TCP URL to a database; with the password (a secret) unless told otherwise."""
        auth = f"{USER}:{PASSWORD}" if password else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str, dbname: str = "postgres") -> list[tuple]:
        """Run one statement as the superuser over the Unix socket (autocommit)."""
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user=USER, dbname=dbname, autocommit=True
        ) as conn:
            cursor = conn.execute(sql)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def create_database(self, template: str = TEMPLATE) -> str:
        """A fresh database copied from `template` (default: an empty one); its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_cluster() -> PgCluster:
    """A started cluster with an empty template database; skips (fails under CI) when
    PostgreSQL is not installed."""
    bin_dir = pg_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        message = "needs PostgreSQL's initdb/pg_ctl (Debian's `postgresql`; CI installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    cluster = PgCluster(bin_dir)
    try:
        cluster.start()
        cluster.admin(f"CREATE DATABASE {TEMPLATE} TEMPLATE template0")
    except BaseException:
        cluster.destroy()
        raise
    return cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's PostgreSQL cluster (started at first use, stopped by its pid at the end)."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL (password included) of a fresh database, dropped after the test."""
    if pg_cluster.postmaster_pid() is None:
        pg_cluster.start()  # a test that stopped the cluster and failed before restarting it
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    with contextlib.suppress(Exception):
        pg_cluster.drop_database(name)
