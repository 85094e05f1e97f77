"""Without a Codex credential fleetd still runs command tasks, and says what is missing."""

from __future__ import annotations

import os
from pathlib import Path

from fleetd.agents.codex_home import KEY_VARIABLES
from tests.support.fleet import running_fleet


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
