"""The README's scheduling example is a config fleetd loads, with the values it shows."""

from __future__ import annotations

import re
from pathlib import Path

from shared.config import load_config

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_scheduling_example_config_loads(tmp_path: Path) -> None:
    text = README.read_text()
    section = text[text.index("## Scheduling and budgets") :]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match is not None
    path = tmp_path / "fleet.toml"
    path.write_text(match.group(1))
    config = load_config({"HOME": str(tmp_path)}, path)
    assert config.limits["agent:claude"] == 2
    assert config.budget.per["agent:claude"].cost_per_day == 80.0
    assert config.prices["gpt-5-codex"].output == 10.0
