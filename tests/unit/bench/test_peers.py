"""`bench.peers`: the last peerbench result read back as peerbench's own table computes it."""

from __future__ import annotations

import json
from pathlib import Path

from bench import peers


def write_results(directory: Path) -> None:
    results = {
        "agent-fleet fleetd --workers 2": {
            "floor_s": [2.0, 4.0, 2.5],
            "contender_s": [5.0, 8.0, 4.0],
        },
        "Huey SqliteHuey -k process -w 2": {
            "floor_s": [2.0, 2.0, 2.0],
            "contender_s": [20.0, 10.0, 40.0],
        },
    }
    (directory / "results.json").write_text(json.dumps({"N": 2000, "REPS": 3, "results": results}))


def test_ratios_are_the_median_rate_over_the_median_floor_rate(tmp_path: Path) -> None:
    write_results(tmp_path)
    run = peers.last_run(str(tmp_path))
    assert run is not None and (run.tasks, run.reps) == (2000, 3)
    # agent-fleet: median rate 2000/5 = 400 over median floor 2000/2.5 = 800.
    assert run.ours() == 0.5
    assert run.peer("Huey") == 0.1  # 100 over 1000
    text = peers.summary(run)
    assert text.index("agent-fleet fleetd --workers 2 0.50") < text.index("Huey")
    assert str(tmp_path / "results.json") in text and "not this one" in text


def test_no_result_says_where_it_looked(tmp_path: Path) -> None:
    assert peers.last_run(str(tmp_path)) is None
    (tmp_path / "results.json").write_text("{not json")
    assert peers.last_run(str(tmp_path)) is None
    assert "no ../shared/peerbench result found" in peers.summary(None)
