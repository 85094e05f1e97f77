"""A fleet that watches the GitHub stand-in: a bare repository as the remote, a config with
[tracker.github], the token in the environment only."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.fleet import Fleet, short_tempdir
from tests.support.github_server import GitHubServer
from tests.support.gitrepo import new_repo, run_git
from tests.support.procs import processes_under

SECRET = "ghp_knownSecretValue0123456789abcdefXYZ"  # looked for everywhere afterwards
REPO = "acme/widgets"
AGENT_MESSAGE = json.dumps(
    {"type": "item.completed", "item": {"type": "agent_message", "text": "fixed the greeting"}}
)


def agent(script: str) -> list[str]:
    """A command agent that runs `script` in the worktree and says what it did."""
    return ["sh", "-c", f"{script}; echo '{AGENT_MESSAGE}'"]


@dataclass
class Tracked:
    fleet: Fleet
    github: GitHubServer
    bare: Path
    root: Path
    others: list[Fleet] = field(default_factory=list)

    def add_node(self) -> Fleet:
        """A second fleetd (its own state directory and queue) watching the same repository."""
        node = Fleet(self.root / f"n{len(self.others) + 2}", self.fleet.env)
        self.others.append(node)
        node.start("--workers", "1")
        return node

    def branch(self, name: str) -> str | None:
        done = run_git(self.bare, "for-each-ref", "--format=%(objectname)", f"refs/heads/{name}")
        return done.strip() or None

    def tasks(self) -> list[dict]:
        return self.fleet.json("list")

    def restart(self) -> None:
        self.fleet.close()
        self.fleet.start()


def bare_remote(root: Path) -> Path:
    source = new_repo(root / "source", {"hello.txt": "helo\n"})
    bare = root / "widgets.git"
    run_git(root, "clone", "-q", "--bare", str(source), str(bare))
    return bare


def config_text(
    url: str,
    argv: list[str],
    poll: float = 0.2,
    token_env: str = "GITHUB_TOKEN",
    agent: str = "command",
) -> str:
    return (
        "[tracker.github]\n"
        f'api_url = "{url}"\n'
        f'repos = ["{REPO}"]\n'
        f"poll_seconds = {poll}\n"
        f'agent = "{agent}"\n'
        f"argv = {json.dumps(argv)}\n"
        f'token_env = "{token_env}"\n'
    )


@contextlib.contextmanager
def tracked_fleet(
    argv: list[str],
    token: str = SECRET,
    agent: str = "command",
    env: dict[str, str] | None = None,
    config: str = "",
) -> Iterator[Tracked]:
    """A started fleet watching REPO on a started stand-in; everything ended afterwards.
    `env` replaces the host's environment (FLEET_* left out); `config` adds TOML tables."""
    root = short_tempdir()
    with GitHubServer(token=SECRET) as github:
        bare = bare_remote(root)
        github.add_repo(REPO, bare)
        path = root / "fleet.toml"
        path.write_text(config_text(github.url, argv, agent=agent) + config)
        base = {k: v for k, v in (env or os.environ).items() if not k.startswith("FLEET_")}
        fleet = Fleet(root / "s", {**base, "GITHUB_TOKEN": token, "FLEET_CONFIG": str(path)})
        tracked = Tracked(fleet, github, bare, root)
        try:
            fleet.start("--workers", "2")
            yield tracked
        finally:
            for node in [fleet, *tracked.others]:
                node.close()
            left = processes_under(root)
            shutil.rmtree(root, ignore_errors=True)
            assert not left, f"processes left behind: {left}"
