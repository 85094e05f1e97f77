"""`git push` of a task's commit to the tracker's repository, the token kept out of sight.

The token reaches git as an `http.<url>.extraHeader` given through git's GIT_CONFIG_COUNT /
GIT_CONFIG_KEY_n / GIT_CONFIG_VALUE_n environment: never a file, a remote URL or an argument
(a process's arguments are readable by every user in /proc/PID/cmdline; its environment only by
its owner), and scoped to the clone URL, so no other host ever sees it. Every text this module
returns or raises has the token and its encoded form masked.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from fleetd.tracker.base import TrackerError
from fleetd.workspace.git import GIT_CONFIG, git_env

PUSH_TIMEOUT_SECONDS = 600.0
ERROR_TAIL = 2000


class Pusher:
    """Pushes commits with the tracker's credentials; holds them only in memory."""

    def __init__(
        self, headers: Mapping[str, str], host_env: Mapping[str, str], secrets: list[str]
    ) -> None:
        self._headers = dict(headers)
        self._env = git_env(host_env, "agent-fleet", "agent-fleet@localhost")
        encoded = [value.split(" ", 1)[-1] for value in self._headers.values()]
        self._secrets = [secret for secret in [*secrets, *encoded] if secret]

    def __repr__(self) -> str:
        return "Pusher(***)"

    def environment(self, url: str) -> dict[str, str]:
        """git's environment for `url`: the headers as config entries, for that URL only, and
        TLS verification on whatever the repository's config says (these entries rank with
        `-c`, above it)."""
        entries = [
            (f"http.{url}.extraHeader", f"{name}: {value}") for name, value in self._headers.items()
        ]
        entries.append(("http.sslVerify", "true"))
        env = dict(self._env)
        env["GIT_CONFIG_COUNT"] = str(len(entries))
        for index, (key, value) in enumerate(entries):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        return env

    def push(self, source: Path, commit: str, url: str, branch: str, force: bool) -> None:
        """Make `branch` at `url` point at `commit` (from the repository at `source`)."""
        refspec = f"{'+' if force else ''}{commit}:refs/heads/{branch}"
        # The fixed configuration of every fleet git command: no hook (one in the clone would
        # run with the token in its environment), only the accepted transports.
        fixed = [arg for item in GIT_CONFIG for arg in ("-c", item)]
        argv = ["git", *fixed, "-C", str(source), "push", "--quiet", "--end-of-options"]
        argv += [url, refspec]
        process = subprocess.Popen(
            argv,
            env=self.environment(url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a timeout ends git and its remote helper together
        )
        try:
            _, stderr = process.communicate(timeout=PUSH_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TrackerError(
                f"git push to {self.mask(url)} took over {PUSH_TIMEOUT_SECONDS:.0f} s"
            ) from None
        if process.returncode != 0:
            text = self.mask(stderr.decode("utf-8", "replace").strip())[-ERROR_TAIL:]
            raise TrackerError(f"git push of {branch} to {self.mask(url)} failed: {text}")

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
