"""A real fleetd in a temporary state directory, driven through the real fleetctl.

The benchmarks use the same harness (`bench.common.BenchFleet` builds on `Fleet`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetd.runtime.agent_registry import AgentRegistry
from shared import messages as m
from shared.client import ControlClient
from shared.errors import FleetError
from tests.support.procs import processes_under, session_members

FLEETD = [sys.executable, "-m", "fleetd"]
FLEETCTL = [sys.executable, "-m", "fleetctl"]


def wait_for(
    predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)


def short_tempdir(prefix: str = "fl") -> Path:
    """A temp directory short enough for Unix socket paths (108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class Fleet:
    """One fleetd process (its own session) and helpers to drive and inspect it."""

    def __init__(
        self, state_dir: Path, env: Mapping[str, str] | None = None, log_path: Path | None = None
    ) -> None:
        self.state_dir = state_dir
        self.env = dict(os.environ if env is None else env)
        self.env["FLEET_STATE_DIR"] = str(state_dir)
        self.env.setdefault("FLEET_WORKER_GRACE_SECONDS", "3")
        # The dashboard is tested by the tests that ask for it (tests/web/): one port each.
        self.env.setdefault("FLEET_WEB_LISTEN", "off")
        self.python = sys.executable  # another virtualenv's, to run fleetd with its packages
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_path or state_dir.parent / (state_dir.name + ".log")
        self._client: ControlClient | None = None

    # --- life --------------------------------------------------------------------------------

    def start(self, *args: str, wait: bool = True, launcher: Sequence[str] = ()) -> Fleet:
        """Start fleetd in the foreground, through `launcher` (e.g. `unshare ...`) if given."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*launcher, self.python, *FLEETD[1:], "--foreground", *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0, idle: int | None = None) -> None:
        """Until fleetd answers with a worker up (or, given `idle`, that many idle workers)."""

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"fleetd exited {self.proc.returncode}:\n{self.log()}")
            try:
                workers = self.status().workers
            except FleetError:
                return False
            if idle is not None:
                return sum(w.state == "idle" for w in workers) == idle
            return any(w.state in ("idle", "busy") for w in workers)

        wait_for(ready, timeout, what="fleetd to answer with workers ready")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def agent_pid(self, timeout: float = 15.0) -> int:
        """The pid of an agent on record in agents/ (waiting for one): each worker's file is
        blank between its agents."""
        registry = AgentRegistry(self.state_dir / "agents")
        found = wait_for(registry.leftovers, timeout, what="an agent on record")
        return int(found[0][1])

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill_all(self) -> None:
        """SIGKILL fleetd and all its children (its session) at once, as a crash would.

        All are stopped first: killed one by one, a part could see another die and react (the
        supervisor ends a dead worker's agent; a worker whose parent died ends its own).
        """
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in session_members(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def close(self) -> None:
        """Stop fleetd if still running; end anything left; never leave a process behind."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill_all()
        if self.proc is not None:
            for pid in session_members(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            AgentRegistry(self.state_dir / "agents").end_leftovers()
        for pid in processes_under(self.state_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # --- the control socket, from this process -------------------------------------------------

    @property
    def client(self) -> ControlClient:
        if self._client is None:
            self._client = ControlClient(self.state_dir / "fleetd.sock", timeout=30.0)
        return self._client

    def request(self, message: m.Message) -> m.Message:
        return self.client.request(message)

    def status(self) -> m.Status:
        reply = self.request(m.GetStatus())
        assert isinstance(reply, m.Status)
        return reply

    # --- fleetctl ----------------------------------------------------------------------------

    def ctl(
        self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*FLEETCTL, *args],
            env=self.env,
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"fleetctl {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}\n--- fleetd log ---\n{self.log()[-4000:]}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ctl(*args, "--json").stdout)

    def enqueue(self, *args: str) -> int:
        return int(self.ctl("enqueue", *args).stdout.strip())

    def show(self, task: int) -> dict[str, Any]:
        return self.json("show", str(task))

    def wait_state(self, task: int, *states: str, timeout: float = 30.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            shown = self.show(task)
            return shown if shown["state"] in states else None

        return wait_for(reached, timeout, what=f"task {task} to reach {states}")

    def events(self, task: int) -> list[dict[str, Any]]:
        out = self.ctl("events", str(task), "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


@contextlib.contextmanager
def running_fleet(*args: str, env: Mapping[str, str] | None = None) -> Iterator[Fleet]:
    """A started fleet that is stopped and cleaned up afterwards, leaving no process."""
    root = short_tempdir()
    fleet = Fleet(root / "s", env)
    try:
        fleet.start(*args)
        yield fleet
    finally:
        fleet.close()
        left = processes_under(root)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes left behind: {left}"
