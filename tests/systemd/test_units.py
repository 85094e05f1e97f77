"""The shipped units under a real systemd: systemd 252 as PID 1 in a podman container.

Runs only with AGENT_FLEET_SYSTEMD_TEST=1, as `make systemd-test` sets it after making the
container test's image (tests/container). The test bed is containers/systemd/Containerfile:
that image plus Debian's systemd, the units as the README installs them, fleetd.socket enabled.
Each test boots a fresh container (its own state) and adds one drop-in for test speed only:
1 worker, a short grace period, a 6 s watchdog, and a lower TimeoutStopSec, because under this
machine's cgroup v1 systemd in a container waits TimeoutStopSec after the main process died
even when the cgroup is empty. The shipped unit keeps its own values.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.test_image import IMAGE, RUNTIME_ARGS, Container, podman, unique_name
from tests.support.codex_env import API_KEY_ENV, config_toml
from tests.support.fleet import wait_for
from tests.support.model_server import ModelServer

REPO_ROOT = Path(__file__).resolve().parents[2]
ENABLED = os.environ.get("AGENT_FLEET_SYSTEMD_TEST") == "1"
SYSTEMD_IMAGE = os.environ.get("AGENT_FLEET_SYSTEMD_IMAGE", "localhost/agent-fleet:systemd-test")
MAX_EXPOSURE = 5.0
API_KEY = "sk-test-systemd-3f9d2c1b7e6a4058"

pytestmark = [
    pytest.mark.skipif(
        not ENABLED,
        reason="systemd test: run `make systemd-test` (sets AGENT_FLEET_SYSTEMD_TEST=1)",
    ),
    pytest.mark.timeout(600),
]

TEST_DROP_IN = """\
[Service]
Environment=FLEET_WORKERS=1 FLEET_WORKER_GRACE_SECONDS=3 FLEET_CODEX_BIN=/opt/codex/bin/codex
WatchdogSec=6
RestartSec=1
TimeoutStopSec=12
ReadWritePaths=/repos
"""
# An agent that runs until it is ended, printing one line first.
LONG = ["--", "sh", "-c", 'cat >/dev/null; echo "{\\"type\\":\\"started\\"}"; exec sleep 300']


@pytest.fixture(scope="module")
def image() -> str:
    """The test bed, built FROM the container test's image: both builds reuse cached layers."""
    argv = ["build", "--pull=never", "--format", "docker", "--network", "host", *RUNTIME_ARGS]
    base = os.environ.get("AGENT_FLEET_BASE_IMAGE", "debian:bookworm-slim")
    podman(
        *argv,
        *("--build-arg", f"BASE_IMAGE={base}", "--jobs", "2"),
        *("-f", str(REPO_ROOT / "containers/Dockerfile"), "-t", IMAGE, str(REPO_ROOT)),
        timeout=1200,
    )
    podman(
        *argv,
        *("--build-arg", f"FLEET_IMAGE={IMAGE}"),
        *("-f", str(REPO_ROOT / "containers/systemd/Containerfile"), "-t", SYSTEMD_IMAGE),
        str(REPO_ROOT),
        timeout=1200,
    )
    return SYSTEMD_IMAGE


class Machine(Container):
    """One container with systemd as PID 1, driven through `podman exec`; fleetctl names the
    system unit's state directory."""

    def sh(self, script: str, check: bool = True, timeout: float = 60) -> str:
        return podman("exec", self.name, "sh", "-c", script, check=check, timeout=timeout).stdout

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["exec", self.name, "fleetctl", "--state-dir", "/var/lib/agent-fleet", *args]
        return podman(*argv, check=check, timeout=90)

    def unit(self, *props: str, unit: str = "fleetd.service") -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def agents(self) -> list[str]:
        """Command lines of the test's agents (`sleep 300`) still alive anywhere in the box."""
        script = (
            "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null);"
            ' case "$c" in "sleep 300"*) echo "$c";; esac; done'
        )
        return self.sh(script).splitlines()

    def journal(self) -> str:
        return self.sh("journalctl -u fleetd.service -u fleetd.socket --no-pager", check=False)

    def starts(self) -> int:
        return self.journal().count("Started fleetd.service")


@pytest.fixture
def machine(image: str) -> Iterator[Machine]:
    """A fresh container, booted, with the test drop-in in place and fleetd not yet started."""
    name = unique_name()
    argv = ["run", "-d", "--name", name, "--systemd=always", *RUNTIME_ARGS, "--network", "host"]
    podman(*argv, image)
    box = Machine(name)
    try:

        def booted() -> bool:
            state = box.sh("systemctl is-system-running", check=False).strip()
            return state in ("running", "degraded")

        wait_for(booted, 60, interval=0.3, what="systemd in the container to finish booting")
        box.sh(
            "mkdir -p /etc/systemd/system/fleetd.service.d"
            f" && printf '%s' '{TEST_DROP_IN}' >/etc/systemd/system/fleetd.service.d/test.conf"
            " && systemctl daemon-reload"
        )
        yield box
    finally:
        podman("rm", "--force", "--volumes", "--time", "0", name, check=False, timeout=60)


def test_first_request_starts_the_hardened_fleetd(machine: Machine) -> None:
    """Socket activation on the first fleetctl request; fleetd's STATUS= in systemd; it runs as
    the agent-fleet user; `systemd-analyze security` rates the unit 5.0 or less."""
    assert machine.unit("ActiveState")["ActiveState"] == "inactive"
    assert machine.unit("ActiveState", unit="fleetd.socket")["ActiveState"] == "active"
    status = machine.json("status")
    assert status["socket_activated"] is True
    shown = machine.unit("ActiveState", "MainPID", "StatusText", "User")
    assert shown["ActiveState"] == "active"
    assert shown["MainPID"] == str(status["pid"])
    assert shown["StatusText"] == "running 1 workers"
    assert machine.sh(f"stat -c %U /proc/{status['pid']}").strip() == "agent-fleet"
    task = machine.enqueue("hello", "--", "sh", "-c", 'cat >/dev/null; echo "{\\"a\\":1}"')
    assert machine.wait_state(task, "succeeded", "failed")["state"] == "succeeded"
    report = machine.sh("systemd-analyze security fleetd.service", check=False)
    found = re.search(r"Overall exposure level for fleetd\.service: ([0-9.]+)", report)
    assert found, report
    print(f"systemd-test figure: exposure = {found.group(1)}")
    assert float(found.group(1)) <= MAX_EXPOSURE, report


def test_systemctl_stop_puts_the_running_task_back_and_leaves_no_agent(machine: Machine) -> None:
    task = machine.enqueue("runs until stopped", *LONG)
    machine.wait_state(task, "running")
    machine.sh("systemctl stop fleetd.service", timeout=120)
    assert machine.unit("ActiveState")["ActiveState"] == "inactive"
    assert machine.agents() == []
    # The next request starts fleetd again, and the task with it.
    shown = machine.wait_state(task, "running")
    assert shown["executions"][0]["outcome"] == "interrupted", shown


@pytest.mark.parametrize("command", ["stop", "drain"])
def test_fleetctl_stop_and_drain_leave_fleetd_stopped(machine: Machine, command: str) -> None:
    """A waiting fleetctl makes no connection systemd would start fleetd again for."""
    argv = LONG if command == "stop" else ["--", "sh", "-c", "cat >/dev/null; sleep 2"]
    task = machine.enqueue("a task", *argv)
    machine.wait_state(task, "running")
    said = machine.ctl(command).stdout
    # systemd starts a service for its socket within milliseconds; give it ample time to.
    time.sleep(3)
    assert machine.unit("ActiveState")["ActiveState"] == "inactive", machine.journal()
    assert machine.starts() == 1, machine.journal()
    assert machine.agents() == []
    assert "stopped" in said and "systemctl stop fleetd.socket fleetd.service" in said


def test_watchdog_ends_a_stopped_fleetd_and_restart_recovers_the_task(machine: Machine) -> None:
    task = machine.enqueue("runs through a hang", *LONG)
    machine.wait_state(task, "running")
    before = machine.unit("MainPID")["MainPID"]
    machine.sh("systemctl kill --kill-whom=main --signal=SIGSTOP fleetd.service")

    def restarted() -> bool:
        shown = machine.unit("ActiveState", "MainPID", "NRestarts")
        return shown["ActiveState"] == "active" and shown["MainPID"] not in ("0", before)

    wait_for(restarted, 120, interval=0.5, what="the watchdog to end fleetd and Restart=")
    assert "Watchdog timeout" in machine.journal()
    assert int(machine.unit("NRestarts")["NRestarts"]) == 1
    shown = machine.wait_state(task, "running")
    assert [e["outcome"] for e in shown["executions"]] == ["lost", "running"], shown
    assert len(machine.agents()) == 1  # the new run's; the hung fleetd's agent was ended


def test_systemctl_kill_sigkill_is_recovered(machine: Machine) -> None:
    task = machine.enqueue("runs through a crash", *LONG)
    machine.wait_state(task, "running")
    machine.sh("systemctl kill --signal=SIGKILL fleetd.service")

    def restarted() -> bool:
        shown = machine.unit("ActiveState", "NRestarts")
        return shown["ActiveState"] == "active" and shown["NRestarts"] == "1"

    wait_for(restarted, 120, interval=0.5, what="Restart= to bring fleetd back")
    shown = machine.wait_state(task, "running")
    assert [e["outcome"] for e in shown["executions"]] == ["lost", "running"], shown
    assert len(machine.agents()) == 1


def test_codex_runs_in_its_bubblewrap_sandbox_inside_the_hardened_unit(
    machine: Machine, server: ModelServer
) -> None:
    """The pinned Codex CLI, as the agent-fleet user under every sandboxing setting, with its
    own workspace-write sandbox (bubblewrap), in a repository named by ReadWritePaths=."""
    codex_home = "/var/lib/agent-fleet/.codex"
    machine.sh(
        f"install -d -m 0700 {codex_home} /repos/demo"
        f" && printf '%s' '{config_toml(server.base_url)}' >{codex_home}/config.toml"
        f" && echo {API_KEY_ENV}={API_KEY} >/etc/agent-fleet/env"
        " && git -C /repos/demo init -q && echo demo >/repos/demo/README"
        " && chown -R agent-fleet:agent-fleet /var/lib/agent-fleet /repos/demo"
    )
    server.script([server.shell("echo sandboxed > sandboxed.txt"), server.message("Done")])
    task = machine.enqueue(
        "create sandboxed.txt",
        *("--agent", "codex", "--model", "gpt-4.1", "--cwd", "/repos/demo"),
        *("--sandbox", "workspace-write"),
    )
    shown = machine.wait_state(task, "succeeded", "failed", "timed_out", timeout=120)
    assert shown["state"] == "succeeded", (shown, machine.journal()[-3000:])
    events = machine.ctl("events", str(task)).stdout
    assert machine.sh("cat /repos/demo/sandboxed.txt", check=False) == "sandboxed\n", events
    assert API_KEY not in machine.journal()
