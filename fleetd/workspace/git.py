"""Git plumbing for workspaces: git's CLI with a fixed configuration and a clean environment,
clones, commits and diffs, validation of what users give, and a lock per repository."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetd.runtime.locks import FileLock
from fleetd.workspace.commands import Completed, GroupRunner
from fleetd.workspace.errors import WorkspaceAborted, WorkspaceError
from shared.models import DiffSummary, FileChange

GIT_TIMEOUT = 300.0  # local git commands (add, commit, worktree add on a big checkout)
NETWORK_TIMEOUT = 1800.0  # clone and fetch
LOCK_TIMEOUT = NETWORK_TIMEOUT + 60.0  # another worker may be cloning the same repository
STDERR_TAIL = 2000  # characters of git's stderr quoted in an error
DIFF_ARGS = ("diff", "-M", "--no-ext-diff", "--no-textconv", "--no-color")
# Clone and fetch fail with git's own words (checked by the caller), and may take long.
NETWORK: dict[str, Any] = {"check": False, "timeout": NETWORK_TIMEOUT}

# Applied to every git command: nothing from a repository's or the host's configuration may run
# a program (hooks, fsmonitor), sign, open a pager, start background maintenance or use a
# transport other than the accepted URL forms (`ext::` runs commands).
GIT_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "commit.gpgSign=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "color.ui=false",
    "core.pager=cat",
    "protocol.allow=never",
    "protocol.file.allow=always",
    "protocol.https.allow=always",
    "protocol.ssh.allow=always",
)
# Host variables git may need to reach a remote (keys, certificates, proxies); nothing else.
GIT_PASS_ENV = (
    "PATH",
    "HOME",
    "TMPDIR",
    "SSH_AUTH_SOCK",
    "GIT_SSH_COMMAND",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",  # git's own CA bundle variable (git built on GnuTLS ignores SSL_CERT_FILE)
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
)

URL_RE = re.compile(r"^(https|ssh|file)://[^\s]+$")
SCP_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")  # git@host:owner/repo.git
SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def git_env(env: Mapping[str, str], name: str, email: str) -> dict[str, str]:
    """The environment of every git command: explicit, never prompting, never a pager."""
    clean = {key: env[key] for key in GIT_PASS_ENV if key in env}
    clean.setdefault("PATH", os.defpath)
    clean.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    clean.update(
        LC_ALL="C",
        LANG="C",
        GIT_TERMINAL_PROMPT="0",
        GIT_PAGER="cat",
        PAGER="cat",
        GIT_AUTHOR_NAME=name,
        GIT_AUTHOR_EMAIL=email,
        GIT_COMMITTER_NAME=name,
        GIT_COMMITTER_EMAIL=email,
    )
    return clean


class Git:
    """git's CLI with the fixed configuration and environment above, through a GroupRunner."""

    def __init__(self, runner: GroupRunner, env: Mapping[str, str]) -> None:
        self.runner = runner
        self.env = dict(env)

    def call(
        self,
        cwd: Path,
        *args: str,
        check: bool = True,
        timeout: float = GIT_TIMEOUT,
        stdout_file: Path | None = None,
    ) -> Completed:
        """Run `git ARGS` in `cwd`; a failure (when checked) raises WorkspaceError with stderr."""
        argv = ["git"]
        for item in GIT_CONFIG:
            argv += ["-c", item]
        done = self.runner.run(
            [*argv, *args], cwd=cwd, env=self.env, timeout=timeout, stdout_file=stdout_file
        )
        if done.aborted:
            raise WorkspaceAborted(
                f"`git {args[0]}` aborted: the task was cancelled or fleetd is stopping"
            )
        if done.timed_out:
            raise WorkspaceError(
                f"`git {args[0]}` in {cwd} took over {timeout:.0f} s and was stopped"
            )
        if check and done.returncode != 0:
            raise WorkspaceError(
                f"`git {_shown(args)}` failed in {cwd} (exit {done.returncode}): "
                + stderr_tail(done)
            )
        return done

    def text(self, cwd: Path, *args: str) -> str:
        """stdout of a checked git command, stripped."""
        return self.call(cwd, *args).stdout.decode("utf-8", "replace").strip()

    def ok(self, cwd: Path, *args: str) -> bool:
        return self.call(cwd, *args, check=False).returncode == 0

    def commit_of(self, cwd: Path, rev: str) -> str | None:
        """The commit `rev` names in the repository at `cwd`, or None."""
        done = self.call(
            cwd,
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            rev + "^{commit}",
            check=False,
        )
        if done.returncode != 0:
            return None
        return done.stdout.decode().strip() or None

    def has_branch(self, cwd: Path, branch: str) -> bool:
        return self.ok(cwd, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}")

    def clone_or_fetch(self, url: str, clone: Path, fetch: bool) -> None:
        """Clone `url` once (no checkout: worktrees are made from it); fetch on later tasks."""
        if (clone / ".git").is_dir():
            if fetch:
                # --force --tags: a tag moved upstream is moved here too, not a fetch error.
                fetch_args = ("fetch", "--quiet", "--prune", "--force", "--tags", "origin")
                done = self.call(clone, *fetch_args, **NETWORK)
                _check_network(done, f"cannot fetch {url} into {clone}")
            return
        shutil.rmtree(clone, ignore_errors=True)  # a clone interrupted earlier
        clone.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".clone-", dir=clone.parent))
        try:
            args = ("clone", "--quiet", "--no-checkout", "--end-of-options", url, str(partial))
            _check_network(self.call(clone.parent, *args, **NETWORK), f"cannot clone {url}")
            partial.rename(clone)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def resolve_base(self, source: Path, ref: str | None, clone: bool) -> str:
        """The commit a task's branch starts from: REF, or the repository's HEAD."""
        if clone:  # our clone: the remote's branches are origin/*, its default branch origin/HEAD
            names = ["refs/remotes/origin/HEAD", "HEAD"] if ref is None else [f"origin/{ref}", ref]
        else:
            names = ["HEAD"] if ref is None else [ref]
        for name in names:
            commit = self.commit_of(source, name)
            if commit is not None:
                return commit
        if ref is None:
            raise WorkspaceError(f"repository {source} has no commits: give --ref or commit first")
        raise WorkspaceError(
            f"unknown ref {ref!r} in {source}: give an existing branch, tag or commit"
        )

    def commit_work(self, path: Path, branch: str, base: str, message: str) -> str | None:
        """Commit everything in the worktree on `branch`; the branch's commit, or None if it
        has not moved from `base`.

        Plumbing rather than `git commit`: the work lands on the branch even if the agent
        switched branches, and no hook, signing or host identity is involved.
        """
        self.call(path, "add", "-A")
        tree = self.text(path, "write-tree")
        tip = self.commit_of(path, f"refs/heads/{branch}") or base
        if tree != self.text(path, "rev-parse", f"{tip}^{{tree}}"):
            with tempfile.NamedTemporaryFile(
                "w", suffix=".msg", encoding="utf-8", errors="replace"
            ) as handle:
                handle.write(message.replace("\0", ""))
                handle.flush()
                tip = self.text(path, "commit-tree", tree, "-p", tip, "-F", handle.name)
            self.call(path, "update-ref", "-m", "agent-fleet: commit", f"refs/heads/{branch}", tip)
        return None if tip == base else tip

    def diff_summary(self, path: Path, base: str, commit: str) -> DiffSummary:
        """Files and line counts of base..commit (renames followed)."""
        numstat = self.call(path, *DIFF_ARGS, "--numstat", "-z", base, commit)
        files = parse_numstat(numstat.stdout)
        return DiffSummary(
            files=files,
            insertions=sum(change.insertions or 0 for change in files),
            deletions=sum(change.deletions or 0 for change in files),
        )

    def write_patch(self, path: Path, base: str, commit: str, target: Path) -> None:
        """The full patch of base..commit, binary files included, that `git apply` takes."""
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        prefixes = ("--binary", "--src-prefix=a/", "--dst-prefix=b/")
        self.call(path, *DIFF_ARGS, *prefixes, base, commit, stdout_file=partial)
        partial.replace(target)


def _check_network(done: Completed, what: str) -> None:
    if done.returncode != 0:
        raise WorkspaceError(f"{what}: {stderr_tail(done)}")


def _shown(args: Sequence[str]) -> str:
    text = " ".join(args)
    return text if len(text) <= 200 else text[:200] + "…"


def stderr_tail(done: Completed) -> str:
    text = done.stderr.decode("utf-8", "replace").strip()
    if len(text) > STDERR_TAIL:
        text = "…" + text[-STDERR_TAIL:]
    return text or "(no output)"


def check_ref(ref: str) -> str:
    """A REF given by a user, refused when it could be read as an option or is malformed."""
    if not ref or ref.startswith("-") or any(ch.isspace() or ch < " " for ch in ref):
        raise WorkspaceError(
            f"invalid --ref {ref!r}: give a branch, tag or commit (not starting with '-', "
            "without spaces or control characters)"
        )
    return ref


def is_url(repo: str) -> bool:
    """Whether `repo` is a URL to clone (True) or a local path (False); refuse anything else."""
    if not repo or repo.startswith("-") or any(ch < " " for ch in repo):
        raise WorkspaceError(f"invalid --repo {repo!r}: give a local path or a git URL")
    if URL_RE.match(repo) or SCP_RE.match(repo):
        return True
    if SCHEME_RE.match(repo):
        raise WorkspaceError(
            f"unsupported repository URL {repo!r}: use https://, ssh://, git@host:path, "
            "file:// or a local path"
        )
    return False


def clone_name(url: str) -> str:
    """A directory name for the clone of `url`: readable, and unique by a hash of the URL."""
    last = re.split(r"[/:]", url.rstrip("/"))[-1].removesuffix(".git")
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", last).lstrip(".")[:40] or "repo"
    return f"{readable}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def parse_numstat(data: bytes) -> list[FileChange]:
    """Files of `git diff --numstat -z`; binary files ("-") count None lines."""
    parts = data.split(b"\0")
    files = []
    i = 0
    while i < len(parts) and parts[i]:
        added, removed, path = parts[i].split(b"\t", 2)
        i += 1
        if not path:  # a rename: the old and new paths follow as their own fields
            path = parts[i + 1]
            i += 2
        files.append(
            FileChange(
                path=path.decode("utf-8", "backslashreplace"),
                insertions=None if added == b"-" else int(added),
                deletions=None if removed == b"-" else int(removed),
            )
        )
    return files


@contextlib.contextmanager
def repo_lock(path: Path, runner: GroupRunner, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive lock on `path`: workers in other processes may use the same repo.

    git's own lock files make a concurrent `git worktree add` fail rather than wait.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        if not lock.acquire_within(timeout, runner.check):
            raise WorkspaceError(
                f"another worker held the repository lock {path} for over "
                f"{timeout:.0f} s; check for a stuck clone or fetch"
            )
        yield
    finally:
        lock.release()
