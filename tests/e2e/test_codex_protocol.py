"""The committed app-server types match what the pinned codex binary's schema generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.agents.appserver import generate
from tests.support.codex_env import codex_binary
from tests.support.requires import needs_codex

pytestmark = needs_codex()


@pytest.mark.timeout(120)
def test_protocol_py_is_what_the_pinned_binary_generates() -> None:
    committed = Path(generate.__file__).with_name("protocol.py").read_text()
    fresh = generate.formatted(generate.generate(str(codex_binary())))
    assert fresh == committed, (
        "fleetd/agents/appserver/protocol.py is stale for this codex: regenerate it with "
        "`python -m fleetd.agents.appserver.generate` and review the diff"
    )
