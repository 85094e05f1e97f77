"""The container image (issue 5): containers/Dockerfile built and run with podman, as a user's
`docker build` / `docker run` would build and run it.

Runs only with AGENT_FLEET_CONTAINER_TEST=1, as `make container-test` sets it after installing
podman and making the FROM image locally (tests/container/stand_in_base.sh).
Podman here needs runc with lower limits (crun fails on setrlimit and cgroups) and has no
systemd to schedule health checks, so `podman healthcheck run` runs the image's own check.
The Codex task reaches the tests' loopback model server through `--network host`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.codex_env import API_KEY_ENV, config_toml
from tests.support.codex_fleet import files_containing
from tests.support.fleet import wait_for
from tests.support.model_server import ModelServer

REPO_ROOT = Path(__file__).resolve().parents[2]
# Not FLEET_*: fleetd rejects FLEET_ variables that are not settings.
ENABLED = os.environ.get("AGENT_FLEET_CONTAINER_TEST") == "1"
IMAGE = os.environ.get("AGENT_FLEET_IMAGE", "localhost/agent-fleet:container-test")
BASE_IMAGE = os.environ.get("AGENT_FLEET_BASE_IMAGE", "debian:bookworm-slim")
FIGURES_FILE = REPO_ROOT / "bench" / "out" / "container-image.json"

pytestmark = [
    pytest.mark.skipif(
        not ENABLED,
        reason="container test: run `make container-test` (sets AGENT_FLEET_CONTAINER_TEST=1)",
    ),
    # The first test builds the image (minutes on a cold cache); the rest take seconds.
    pytest.mark.timeout(1500),
]

# A fake key in the shape of a real one: it must reach Codex, and nothing else.
API_KEY = "sk-test-container-5b1e0c7d9a2f4e68"
# How podman runs containers on this kind of machine (see the module docstring).
RUNTIME_ARGS = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
]
UID = 1000  # the image's user (FLEET_UID)
STOP_TIMEOUT = 30  # what the README gives `docker run --stop-timeout` and compose
GRACE_SECONDS = 10  # worker.grace_seconds in containers/fleet.toml
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
figures: dict[str, Any] = {}


def podman(
    *args: str, check: bool = True, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run podman; fail with its output when it fails (and `check`)."""
    result = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def record(name: str, value: Any) -> None:
    """Keep a figure for bench/RESULTS.md: printed, and written to bench/out/."""
    figures[name] = value
    print(f"container-test figure: {name} = {value}")
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text(json.dumps(figures, indent=2) + "\n")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image built from containers/Dockerfile, with a key in the builder's environment
    (which a build must never capture)."""
    # Asked for but impossible: a failure, never a silent skip.
    assert shutil.which("podman"), "podman is not installed: `make container-test` installs it"
    log = tmp_path_factory.mktemp("build") / "build.log"
    # --format docker keeps HEALTHCHECK; --jobs 2 builds the Python and Codex stages at once,
    # as BuildKit would.
    argv = ["build", "--pull=never", "--format", "docker", "--network", "host", "--jobs", "2"]
    argv += RUNTIME_ARGS
    argv += ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    argv += ["-f", str(REPO_ROOT / "containers/Dockerfile"), "-t", IMAGE, str(REPO_ROOT)]
    env = {**os.environ, "OPENAI_API_KEY": API_KEY, API_KEY_ENV: API_KEY}
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(
            ["podman", *argv], stdout=out, stderr=subprocess.STDOUT, env=env, timeout=1200
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise AssertionError(f"podman build failed ({result.returncode}); last lines:\n{tail}")
    record("build_seconds", round(time.monotonic() - started, 1))
    size = int(podman("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout)
    record("image_mb", round(size / 1e6, 1))
    return IMAGE


def inspect_image(image: str) -> dict[str, Any]:
    return json.loads(podman("image", "inspect", image).stdout)[0]


def unique_name() -> str:
    return f"agent-fleet-test-{os.getpid()}-{time.monotonic_ns()}"


def run_in_image(image: str, *args: str, entrypoint: str | None = None) -> str:
    """Run a throw-away container of the image (as its user) to its end; return its stdout."""
    name = unique_name()
    argv = ["run", "--name", name, *RUNTIME_ARGS, "--health-interval=disable"]
    argv += ["--entrypoint", entrypoint] if entrypoint else []
    try:
        return podman(*argv, image, *args, timeout=60).stdout
    finally:
        # --volumes: the anonymous volume podman made for the image's VOLUME goes too.
        podman("rm", "--force", "--volumes", "--time", "0", name, check=False, timeout=60)


def test_image_config_is_what_docker_needs(image: str) -> None:
    """Non-root user, fleetd --foreground, SIGTERM, the state volume, a fleetctl health check."""
    inspected = inspect_image(image)
    config = inspected["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["fleetd", "--foreground"]
    assert config["StopSignal"] == "SIGTERM"
    assert "/var/lib/agent-fleet" in config["Volumes"]
    health = inspected["Healthcheck"]  # podman shows it beside Config, not in it
    assert health["Test"][0] == "CMD"
    assert health["Test"][1:2] == ["fleetctl"] and "status" in health["Test"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["FLEET_STATE_DIR"] == "/var/lib/agent-fleet"
    assert not {"OPENAI_API_KEY", API_KEY_ENV} & env.keys()


def test_image_holds_python_git_codex_and_claude_but_no_node(image: str) -> None:
    script = (
        "set -e; id -u; python3 --version; git --version; codex --version; claude --version;"
        " fleetctl --help >/dev/null; if command -v npm || command -v node; then exit 9; fi"
    )
    lines = run_in_image(image, "-c", script, entrypoint="sh").splitlines()
    assert lines[0] == str(UID)
    assert lines[1].startswith("Python 3.11")
    assert lines[2].startswith("git version")
    assert lines[3] == "codex-cli 0.169.0"
    assert lines[4] == "2.1.332 (Claude Code)"
    # The README's way to list the settings: the entrypoint with --help.
    assert "FLEET_WORKERS" in run_in_image(image, "--help")


class Container:
    """One container of the image: fleetd in it, driven through `podman exec ... fleetctl`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, "fleetctl", *args, check=check, timeout=60)

    def json(self, *args: str) -> Any:
        return json.loads(self.ctl(*args, "--json").stdout)

    def enqueue(self, *args: str) -> int:
        return int(self.ctl("enqueue", *args).stdout.strip())

    def wait_state(self, task: int, *states: str, timeout: float = 60) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            shown = self.json("show", str(task))
            return shown if shown["state"] in states else None

        return wait_for(reached, timeout, interval=0.3, what=f"task {task} to reach {states}")

    def wait_healthy(self, timeout: float = 60) -> None:
        """Run the image's own health check until it passes."""

        def healthy() -> bool:
            if self.state()["Status"] != "running":
                raise AssertionError(f"container exited:\n{self.logs()}")
            return podman("healthcheck", "run", self.name, check=False).returncode == 0

        wait_for(healthy, timeout, interval=0.2, what="the image's health check to pass")

    def state(self) -> dict[str, Any]:
        return json.loads(podman("inspect", self.name, "--format", "{{json .State}}").stdout)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def zombies(self) -> list[str]:
        """Processes in the container that are zombies (state Z), as `pid comm`."""
        script = (
            "import pathlib\n"
            "for p in pathlib.Path('/proc').glob('[0-9]*/stat'):\n"
            "    try: s = p.read_text()\n"
            "    except OSError: continue\n"
            "    if s[s.rindex(')') + 2] == 'Z': print(s.split(' ', 2)[:2])\n"
        )
        return podman("exec", self.name, "python3", "-c", script).stdout.splitlines()


@pytest.fixture
def volume() -> Iterator[str]:
    """A named volume for the state directory, removed afterwards."""
    name = unique_name()
    podman("volume", "create", name)
    try:
        yield name
    finally:
        podman("volume", "rm", "--force", name, check=False)


@pytest.fixture
def mounts(tmp_path: Path, server: ModelServer) -> dict[str, Path]:
    """What a user mounts: a Codex login directory, a fleet.toml and a repository."""
    # Offline Codex settings stand in for a user's ~/.codex (mounted read-only as CODEX_HOME):
    # the provider is the loopback server, the key comes from the variable passed with -e.
    codex_host = tmp_path / "codex-host"
    codex_host.mkdir()
    (codex_host / "config.toml").write_text(config_toml(server.base_url))
    # The shipped settings with three workers, so the test can tell the mount is read.
    toml = (REPO_ROOT / "containers/fleet.toml").read_text()
    assert "\nworkers = 2\n" in toml and f"\ngrace_seconds = {GRACE_SECONDS} " in toml
    fleet_toml = tmp_path / "fleet.toml"
    fleet_toml.write_text(toml.replace("\nworkers = 2\n", "\nworkers = 3\n"))
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README").write_text("demo\n")
    for argv in (["init", "-q"], ["add", "README"], ["commit", "-q", "-m", "start"]):
        git(repo, *argv)
    for path in (codex_host, fleet_toml, codex_host / "config.toml"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.chown(repo, UID, UID)
    for path in repo.rglob("*"):
        os.chown(path, UID, UID, follow_symlinks=False)
    return {"codex_host": codex_host, "fleet_toml": fleet_toml, "repo": repo}


@pytest.fixture
def container(image: str, volume: str, mounts: dict[str, Path]) -> Iterator[Container]:
    """`docker run -d` as the README has it, the key passed by `-e NAME` from the environment;
    removed afterwards whatever happened."""
    name = unique_name()
    argv = ["run", "-d", "--name", name, *RUNTIME_ARGS, "--network", "host"]
    # No systemd here to run health checks on a timer; `podman healthcheck run` runs them.
    argv += ["--health-interval=disable", "--stop-timeout", str(STOP_TIMEOUT)]
    argv += ["-e", API_KEY_ENV, "-v", f"{volume}:/var/lib/agent-fleet"]
    argv += ["-v", f"{mounts['codex_host']}:/home/fleet/.codex:ro"]
    argv += ["-v", f"{mounts['fleet_toml']}:/etc/agent-fleet/fleet.toml:ro"]
    argv += ["-v", f"{mounts['repo']}:/repos/demo"]
    started = time.monotonic()
    try:
        podman(*argv, image, env={**os.environ, API_KEY_ENV: API_KEY})
        box = Container(name)
        box.wait_healthy()
        record("seconds_to_healthy", round(time.monotonic() - started, 2))
        yield box
    finally:
        podman("rm", "--force", "--volumes", "--time", "0", name, check=False, timeout=60)


def test_fleet_runs_tasks_and_stops_cleanly(
    container: Container, server: ModelServer, mounts: dict[str, Path], volume: str
) -> None:
    """Healthy by its own check; a command task and a Codex task succeed; `podman stop` ends a
    running task gracefully, re-queues it and exits 0 in time; the state survives a restart."""
    assert container.state()["Health"]["Status"] == "healthy"
    assert len(container.json("workers")) == 3, "the mounted fleet.toml was not read"

    hello = container.enqueue(
        "say hello", "--", "sh", "-c", 'cat >/dev/null; echo "{\\"type\\":\\"hello\\"}"'
    )
    server.script(
        [
            server.shell("echo hello > hello.txt", call_id="call_hello"),
            server.message("Done: wrote hello.txt"),
        ]
    )
    # A repository task on the mounted repository: a worktree in the state volume, and the
    # agent's work committed on the task's branch in the user's repository.
    codex = container.enqueue(
        "create hello.txt", "--agent", "codex", "--model", "gpt-4.1", "--repo", "/repos/demo"
    )
    # Codex's own sandbox where the runtime allows user namespaces (podman here, unlike
    # Docker's default seccomp profile): the image's bundled bubblewrap is found and works.
    server.route(
        "[sandboxed]",
        [server.shell("echo sandboxed > sandboxed.txt"), server.message("Done: sandboxed")],
    )
    sandboxed = container.enqueue(
        "[sandboxed] create sandboxed.txt",
        *("--agent", "codex", "--model", "gpt-4.1", "--cwd", "/repos/demo"),
        *("--sandbox", "workspace-write"),
    )
    shown = container.wait_state(hello, *TERMINAL)
    assert shown["state"] == "succeeded", shown
    shown = container.wait_state(codex, *TERMINAL)
    assert shown["state"] == "succeeded", (shown, container.logs())
    assert shown["result"]["final_message"] == "Done: wrote hello.txt"
    branch = shown["result"]["workspace"]["branch"]
    assert git(mounts["repo"], "show", f"{branch}:hello.txt").stdout == "hello\n"
    shown = container.wait_state(sandboxed, *TERMINAL)
    assert shown["state"] == "succeeded", (shown, container.logs())
    assert (mounts["repo"] / "sandboxed.txt").read_text() == "sandboxed\n"
    assert [r.path for r in server.requests] == ["/v1/responses"] * 4
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in server.requests)
    assert container.zombies() == []

    # A task still running when the container is stopped, and deaf to SIGTERM (an ignored signal
    # stays ignored across exec): SIGKILLed after worker.grace_seconds, put back, and fleetd
    # still exits 0 before Docker's own SIGKILL.
    script = 'trap "" TERM; cat >/dev/null; echo "{\\"type\\":\\"started\\"}"; exec sleep 300'
    long = container.enqueue("runs until stopped", "--", "sh", "-c", script)
    container.wait_state(long, "running")
    started = time.monotonic()
    podman("stop", container.name, timeout=STOP_TIMEOUT + 30)
    stop_seconds = time.monotonic() - started
    record("seconds_to_stop_with_a_running_task", round(stop_seconds, 2))
    state = container.state()
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 0, container.logs()
    assert GRACE_SECONDS <= stop_seconds < STOP_TIMEOUT, "not the grace period, or Docker's SIGKILL"
    logs = container.logs()
    assert "fleetd stopped" in logs
    assert API_KEY not in logs

    # The state volume outlives the container's run: the task was put back and runs again,
    # its interrupted run not counted as an attempt.
    podman("start", container.name)
    container.wait_healthy()
    shown = container.wait_state(long, "running")
    assert [e["outcome"] for e in shown["executions"]] == ["interrupted", "running"], shown
    assert shown["attempts"] == 1, shown
    container.ctl("cancel", str(long))
    container.wait_state(long, "cancelled")

    # Drain as the README has it: the running task finishes, then fleetd exits 0 and the
    # container with it. `--no-wait`, since a waiting fleetctl is killed (137) with the container.
    script = 'cat >/dev/null; sleep 1; echo "{\\"type\\":\\"done\\"}"'
    last = container.enqueue("finishes while draining", "--", "sh", "-c", script)
    container.wait_state(last, "running")
    drained = container.ctl("drain", "--no-wait", check=False)
    wait_for(lambda: container.state()["Status"] == "exited", 40, 0.2, "the container to exit")
    assert container.state()["ExitCode"] == 0, container.logs()
    assert drained.returncode == 0, drained.stdout + drained.stderr
    podman("start", container.name)
    container.wait_healthy()
    assert container.json("show", str(last))["state"] == "succeeded"
    podman("stop", container.name, timeout=STOP_TIMEOUT + 30)
    assert container.state()["ExitCode"] == 0

    mountpoint = Path(
        podman("volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.strip()
    )
    assert not files_containing(mountpoint, API_KEY.encode()), "the key reached the state volume"


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """git in the test's repository, whoever owns it (the container's user does, later)."""
    argv = ["git", "-c", "safe.directory=*", "-c", "user.name=test", "-c", "user.email=t@test"]
    return subprocess.run(
        [*argv, "-C", str(repo), *args], check=True, capture_output=True, text=True, timeout=30
    )


def test_no_secret_in_the_image(image: str, tmp_path: Path) -> None:
    """The key in the builder's environment is in no layer, no history entry, no config."""
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "OPENAI_API_KEY" not in history and API_KEY_ENV not in history
    assert API_KEY not in history
    assert API_KEY not in podman("image", "inspect", image).stdout
    archive = tmp_path / "image.tar"
    podman("save", "--format", "docker-archive", "-o", str(archive), image, timeout=300)
    try:
        assert not file_contains(archive, API_KEY.encode()), "the key is in a layer"
    finally:
        with contextlib.suppress(OSError):
            archive.unlink()


def file_contains(path: Path, needle: bytes, chunk: int = 1 << 24) -> bool:
    """Whether the file's bytes contain `needle`, read in chunks that overlap by its length."""
    tail = b""
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            if needle in tail + block:
                return True
            tail = block[-len(needle) :]
    return False
