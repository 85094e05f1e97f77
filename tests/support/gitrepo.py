"""The tests' own git: a fixed identity and nothing from the host's configuration."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def run_git(repo: Path, *args: str) -> str:
    """Run git in `repo`; its stdout as printed. A failure fails the test with git's words."""
    env = {"PATH": os.environ["PATH"], "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(
        ["git", "-c", "user.name=Tester", "-c", "user.email=tester@example.com", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, f"git {args}: {done.stderr}"
    return done.stdout


def commit_all(repo: Path, message: str) -> str:
    """Commit every change in `repo`; the new commit's id."""
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", message)
    return run_git(repo, "rev-parse", "HEAD").strip()


def new_repo(path: Path, files: dict[str, str]) -> Path:
    """A repository at `path` whose branch `main` has one commit holding `files`."""
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).write_text(text)
    commit_all(path, "initial")
    return path
