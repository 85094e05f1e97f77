"""The field's throughput ratios, from the last `../shared/peerbench` run (not this one).

`../shared/peerbench/bench.py` runs agent-fleet beside Huey, Celery, RQ, GNU parallel and
xargs, each against the raw spawn floor measured between its runs, and writes its raw
seconds to `results.json` in its directory (`PEERBENCH_DIR`, default /tmp/peerbench). It
needs Redis and the peers' packages, so `make bench` does not run it; the throughput report
and the summary show its last result, labelled with the file's date, beside ours.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = "/tmp/peerbench"


@dataclass(frozen=True)
class PeerRun:
    """One peerbench run: when, its size, and each contender's ratio to its paired floor."""

    path: Path
    when: str
    tasks: int
    reps: int
    ratios: dict[str, float]

    def label(self) -> str:
        return (
            f"../shared/peerbench, {self.path} of {self.when} ({self.tasks} tasks, "
            f"{self.reps} reps; a separate run, not this one)"
        )

    def ours(self) -> float | None:
        return next((r for name, r in self.ratios.items() if name.startswith("agent-fleet")), None)

    def peer(self, word: str) -> float | None:
        return next((r for name, r in self.ratios.items() if word in name), None)


def last_run(directory: str | None = None) -> PeerRun | None:
    """The last peerbench result, or None if there is none (or it cannot be read)."""
    path = Path(directory or os.environ.get("PEERBENCH_DIR") or DEFAULT_DIR) / "results.json"
    try:
        data = json.loads(path.read_text())
        tasks, reps = int(data["N"]), int(data["REPS"])
        ratios = {}
        for name, runs in data["results"].items():
            # As peerbench's own table: median contender rate over median paired floor rate.
            contender = statistics.median(tasks / s for s in runs["contender_s"])
            floor = statistics.median(tasks / s for s in runs["floor_s"])
            ratios[name] = contender / floor
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(path.stat().st_mtime))
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        ZeroDivisionError,
        statistics.StatisticsError,
    ):
        return None
    return PeerRun(path, when, tasks, reps, ratios)


def summary(run: PeerRun | None) -> str:
    """One line: every contender's ratio in the last peerbench run, ours first."""
    if run is None:
        return (
            "peers: no ../shared/peerbench result found (results.json in PEERBENCH_DIR or "
            f"{DEFAULT_DIR}; see bench/RESULTS.md for how it is run)"
        )
    ordered = sorted(
        run.ratios.items(), key=lambda kv: (not kv[0].startswith("agent-fleet"), kv[0])
    )
    figures = ", ".join(f"{name} {ratio:.2f}" for name, ratio in ordered)
    return f"peers' ratios to the floor ({run.label()}): {figures}"
