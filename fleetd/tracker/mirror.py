"""The tracker's own clone of each watched repository, fetched with its token.

Tasks run on it: the workers make their worktrees from this local repository, so they need no
credential for a private one, and the task's commits land in it, so the pushes go from it. It
is bare, under tracker/repos/; the default branch is fetched into its own name (HEAD points at
it), a pull request's branch into refs/remotes/origin/ (its local name is the worktree's
branch, which git would refuse to move). Fetches hold the same lock as the workers' worktree
changes.

The agents' worktrees share this repository, and its config would apply to the fetches and
pushes that carry the token (a proxy, `http.sslVerify = false`, an `include`): before each,
the config is checked to hold only what `git init --bare` writes, and restored if not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from fleetd.tracker.base import Repository, TrackerError
from fleetd.tracker.push import Pusher
from fleetd.workspace.commands import GroupRunner
from fleetd.workspace.errors import WorkspaceError
from fleetd.workspace.git import NETWORK_TIMEOUT, Git, clone_name, repo_lock
from fleetd.workspace.worktrees import repository_lock_file
from shared.paths import StatePaths

# What `git init --bare` writes; worktrees add nothing to it.
CLEAN_CONFIG = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"


def remote_ref(branch: str) -> str:
    """Where a fetched pull request branch is kept in the clone."""
    return f"refs/remotes/origin/{branch}"


@dataclass
class Mirrors:
    root: Path  # tracker/repos
    paths: StatePaths
    pusher: Pusher

    def path(self, info: Repository) -> Path:
        return self.root / f"{clone_name(info.clone_url)}.git"

    def checked(self, info: Repository) -> Path:
        """The clone's path, its config restored if anything was added to it."""
        mirror = self.path(info)
        config = mirror / "config"
        try:
            text = config.read_text(errors="replace")
        except FileNotFoundError:
            return mirror
        if text != CLEAN_CONFIG:
            logger.warning(
                "{} was changed (by an agent?); restoring it before using the token", config
            )
            config.write_text(CLEAN_CONFIG)
        return mirror

    def update(self, info: Repository, branches: tuple[str, ...] = ()) -> Path:
        """Fetch the default branch (and `branches`) from the repository; the clone's path."""
        mirror = self.path(info)
        runner = GroupRunner()
        git = Git(runner, self.pusher.environment(info.clone_url))
        default = info.default_branch
        refspecs = [f"+refs/heads/{default}:refs/heads/{default}"]
        refspecs += [f"+refs/heads/{branch}:{remote_ref(branch)}" for branch in branches]
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            with repo_lock(repository_lock_file(self.paths, str(mirror.resolve())), runner):
                if not (mirror / "HEAD").is_file():
                    git.call(self.root, "init", "--quiet", "--bare", str(mirror))
                self.checked(info)
                fetch = ("fetch", "--quiet", "--no-tags", "--end-of-options", info.clone_url)
                git.call(mirror, *fetch, *refspecs, timeout=NETWORK_TIMEOUT)
                git.call(mirror, "symbolic-ref", "HEAD", f"refs/heads/{default}")
        except WorkspaceError as exc:
            raise TrackerError(
                f"cannot fetch {self.pusher.mask(info.clone_url)}: {self.pusher.mask(str(exc))}"
            ) from None
        return mirror
