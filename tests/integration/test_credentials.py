"""Without a Codex credential fleetd still runs command tasks, and says what is missing."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from fleetd.agents.codex_home import KEY_VARIABLES
from tests.support.codex_fleet import files_containing
from tests.support.fleet import running_fleet

pytestmark = pytest.mark.timeout(120)


def test_no_credential_warns_and_refuses_codex_tasks_only(tmp_path: Path) -> None:
    empty_home = tmp_path / "codex-home"
    empty_home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    env["CODEX_HOME"] = str(empty_home)
    # No real Codex here: it would try OpenAI's servers, and tests talk to loopback only.
    env["FLEET_CODEX_BIN"] = "/bin/false"
    with running_fleet("--workers", "1", env=env) as fleet:
        status = fleet.json("status")
        assert any("no Codex credential" in w for w in status["warnings"])
        assert "no Codex credential" in fleet.ctl("status").stdout
        assert "no Codex credential" in fleet.log()

        refused = fleet.ctl("enqueue", "fix the bug", "--agent", "codex", check=False)
        assert refused.returncode == 1
        assert "no Codex credential" in refused.stderr
        assert "OPENAI_API_KEY" in refused.stderr
        assert fleet.json("list") == []

        task = fleet.enqueue("hi", "--", "sh", "-c", 'echo \'{"type":"ok"}\'')
        assert fleet.wait_state(task, "succeeded")["state"] == "succeeded"

        # A login made while fleetd runs counts from then on.
        (empty_home / "auth.json").write_text("{}")
        assert fleet.enqueue("fix it", "--agent", "codex", "--timeout", "5") > task
        assert fleet.json("status")["warnings"] == []


# --- a known secret, written every way that can be undone, never kept or printed ------------

SECRET = "sk-fleet-e2e-Known/Secret-0123456789abcdef"
SHORT_GITHUB = "ghp_" + "Q" * 27
# Bytes that would drive the operator's terminal: C0 controls but tab and newline, DEL, C1.
TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

LEAKY_AGENT = r"""
import json, os, sys
key = os.environ["OPENAI_API_KEY"]
one_escaped = key[:5] + "\\u%04x" % ord(key[5]) + key[6:]
def say(line):
    sys.stdout.write(line + "\n")
all_escaped = "".join("\\u%04x" % ord(c) for c in key)
say('{"type":"note","text":"' + all_escaped + '"}')
say(json.dumps({"type": "error", "message": "key " + key}).replace("/", "\\/"))
say("x" * 1000 + key + "y" * 3000)  # over the 1024-byte line limit: cut around the key
say("token " + os.environ["SHORT_GITHUB"])
say("\033]0;TITLE\007\033[2J\x9b31m plain text escapes")
message = "\\u001b]0;T\\u0007\\u001b[2J key " + one_escaped
say('{"type":"item.completed","item":{"type":"agent_message","text":"' + message + '"}}')
sys.stderr.write("stderr " + one_escaped + "\n")
"""


def _leaks(text: str | bytes) -> bool:
    data = text.encode() if isinstance(text, str) else text
    return SECRET.encode() in data or SHORT_GITHUB.encode() in data


def test_known_secret_in_undoable_forms_is_never_stored_or_printed(tmp_path: Path) -> None:
    script = tmp_path / "leaky.py"
    script.write_text(LEAKY_AGENT)
    env = dict(os.environ, OPENAI_API_KEY=SECRET, FLEET_WORKER_MAX_LINE_BYTES="1024")
    env["FLEET_WORKER_ENV_ALLOW"] = "PATH,HOME,OPENAI_API_KEY,SHORT_GITHUB"
    env["SHORT_GITHUB"] = SHORT_GITHUB
    with running_fleet("--workers", "1", env=env) as fleet:
        task = fleet.enqueue("leak", "--", sys.executable, str(script))
        fleet.wait_state(task, "succeeded")
        outputs = {
            "show": fleet.ctl("show", str(task)).stdout,
            "show --json": fleet.ctl("show", str(task), "--json").stdout,
            "events": fleet.ctl("events", str(task)).stdout,
            "events --json": fleet.ctl("events", str(task), "--json").stdout,
            "list": fleet.ctl("list").stdout,
        }
        # The final message and error, as decoded from the agent's JSON.
        shown = fleet.show(task)
        assert shown["result"]["final_message"] == "\x1b]0;T\x07\x1b[2J key [REDACTED]"
        for name, text in outputs.items():
            assert not _leaks(text), f"the secret is in `fleetctl {name}`"
        for name in ("show", "events", "list"):
            bad = TERMINAL_CONTROL.findall(outputs[name])
            assert not bad, f"`fleetctl {name}` prints terminal controls {bad!r}"
        assert "\\x1b]0;TITLE\\x07\\x1b[2J" in outputs["events"]
        events = fleet.events(task)
        assert any(e["type"] == "error" and "[REDACTED]" in e["payload"]["message"] for e in events)
        kept = files_containing(fleet.state_dir, SECRET.encode())
        kept += files_containing(fleet.state_dir, SHORT_GITHUB.encode())
        assert kept == [], f"the secret is stored raw in {kept}"
        fleet.ctl("stop")
        fleet.wait_exit()
        assert not _leaks(fleet.log())
        assert files_containing(fleet.state_dir, SECRET.encode()) == []


def test_task_spec_and_errors_built_from_it_are_printed_masked(tmp_path: Path) -> None:
    env = dict(os.environ, OPENAI_API_KEY=SECRET)
    with running_fleet("--workers", "1", env=env) as fleet:
        prompt = f"use {SECRET} \033[2J now"
        task = fleet.enqueue(prompt, "--label", f"key={SECRET}", "--", f"/nonexistent/{SECRET}")
        fleet.wait_state(task, "failed", "succeeded")
        outputs = [
            fleet.ctl("show", str(task)).stdout,
            fleet.ctl("show", str(task), "--json").stdout,
            fleet.ctl("list").stdout,
            fleet.ctl("list", "--json").stdout,
        ]
        for text in outputs:
            assert not _leaks(text)
            assert "[REDACTED]" in text
        for text in outputs[::2]:  # human output
            assert not TERMINAL_CONTROL.findall(text)
        shown = fleet.show(task)
        assert "[REDACTED]" in shown["result"]["error"]


def test_without_a_claude_credential_claude_tasks_are_refused_saying_how_to_give_one(
    tmp_path: Path,
) -> None:
    claude_dir = tmp_path / "claude-config"
    claude_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env["CLAUDE_CONFIG_DIR"] = str(claude_dir)
    env["FLEET_CLAUDE_BIN"] = "/bin/false"  # never reached: the task is refused first
    with running_fleet("--workers", "1", env=env) as fleet:
        refused = fleet.ctl("enqueue", "fix the bug", "--agent", "claude", check=False)
        assert refused.returncode == 1, refused
        assert "no Claude Code credential" in refused.stderr
        assert "ANTHROPIC_API_KEY" in refused.stderr and "Traceback" not in refused.stderr
        assert fleet.json("list") == []
        # A login made while fleetd runs counts from then on.
        (claude_dir / ".credentials.json").write_text("{}")
        assert fleet.enqueue("fix it", "--agent", "claude", "--timeout", "5") >= 1
