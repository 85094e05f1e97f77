"""A network namespace joined to the host by a veth pair on a private /30, for a node that the
tests cut off from the database by taking the link down; and a test cluster that also listens
on the host's end. Everything is removed in teardown, even after a failure.

Needs root and iproute2's `ip` (CI runs as root with it); skipped without them outside CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.postgres import PgCluster
from tests.support.requires import IN_CI


@dataclass(frozen=True)
class Netns:
    name: str
    host_if: str  # the host's end of the veth pair
    host_ip: str
    inner_ip: str

    def launcher(self) -> list[str]:
        """Run a command inside the namespace (`ip netns exec NAME ...`: same pid, same files)."""
        return ["ip", "netns", "exec", self.name]

    def link(self, up: bool) -> None:
        _ip("link", "set", self.host_if, "up" if up else "down")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to make a network namespace"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip`"
    return None


@contextlib.contextmanager
def network_namespace() -> Iterator[Netns]:
    why = _usable()
    if why is not None:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    tag = os.getpid() % 10_000
    subnet = os.getpid() % 250
    ns = Netns(f"flt{tag}", f"flh{tag}", f"10.213.{subnet}.1", f"10.213.{subnet}.2")
    inner_if = f"fln{tag}"
    try:
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", inner_if)
        _ip("link", "set", inner_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.inner_ip}/30", "dev", inner_if)
        _ip("-n", ns.name, "link", "set", inner_if, "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            _ip("link", "del", ns.host_if)  # takes its peer with it
        with contextlib.suppress(subprocess.SubprocessError):
            _ip("netns", "del", ns.name)


@contextlib.contextmanager
def listening_on(cluster: PgCluster, address: str, subnet: str) -> Iterator[None]:
    """The cluster listens on `address` too and lets `subnet` in (with the password), until
    the block ends; a restart each way."""
    hba = cluster.data / "pg_hba.conf"
    original = hba.read_text()
    line = f"host all all {subnet} scram-sha-256\n"
    hba.write_text(original + line)
    cluster.admin(f"ALTER SYSTEM SET listen_addresses = '127.0.0.1,{address}'")
    cluster.restart()
    try:
        yield
    finally:
        hba.write_text(original)
        cluster.admin("ALTER SYSTEM RESET listen_addresses")
        cluster.restart()
