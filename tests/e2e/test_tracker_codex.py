"""The tracker's default agent end to end: a labelled issue, the real Codex CLI against the
scripted loopback model, a pushed branch and a pull request with the run's summary and tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.codex_env import codex_binary
from tests.support.codex_fleet import API_KEY, MODEL, fleet_env
from tests.support.fleet import wait_for
from tests.support.gitrepo import run_git
from tests.support.model_server import ModelServer
from tests.support.requires import needs_codex
from tests.support.tracked import REPO, tracked_fleet

pytestmark = [*needs_codex(), pytest.mark.timeout(120)]


def test_a_labelled_issue_gets_a_codex_change_as_a_pull_request(
    tmp_path: Path, server: ModelServer
) -> None:
    server.script(
        [
            server.shell("printf 'hello\\n' > hello.txt", call_id="call_fix"),
            server.message("Fixed the greeting in hello.txt", input_tokens=123, output_tokens=45),
        ]
    )
    env = fleet_env(tmp_path, server)
    config = f'\n[codex]\nbin = "{codex_binary()}"\nmodel = "{MODEL}"\n'
    with tracked_fleet([], agent="codex", env=env, config=config) as tracked:
        issue = tracked.github.add_issue(REPO, "Greeting is misspelt", "helo", ["agent-fleet"])
        wait_for(
            lambda: {"agent-fleet:done", "agent-fleet:failed"} & set(issue.labels),
            90,
            what="the task's report",
        )
        [task] = tracked.tasks()
        assert task["state"] == "succeeded", task
        [pull] = tracked.github.repos[REPO].pulls.values()
        assert pull.body.startswith(f"Fixes #{issue.number}\n")
        assert "Fixed the greeting in hello.txt" in pull.body and "hello.txt" in pull.body
        assert "Tokens: " in pull.body
        commit = tracked.branch(pull.head)
        assert commit and run_git(tracked.bare, "show", f"{commit}:hello.txt") == "hello\n"
        prompt = task["spec"]["prompt"]
        assert "Greeting is misspelt" in prompt and "helo" in prompt
        assert API_KEY not in tracked.fleet.log()
