"""(d) `fleetctl status` wall time against a running fleet, as a user runs it.

Baselines in the same run, with the same interpreter, the invocations interleaved (one of
each in turn, so that load changes hit all alike): `python -c "import zmq, msgspec"` (the
two libraries a status request cannot do without; issue 14 asks for status <= 1.5x that,
aim 1.2x), `python -c pass` (bare start-up) and `python -c "import fleetctl.cli"` (every
command module and typer, what status cost before its lean path). Also shown: the CPU time
(user + system) of each, which a loaded shared machine inflates much less than the wall time.
"""

from __future__ import annotations

import subprocess

from bench.common import (
    FLEETCTL,
    PYTHON,
    REPO,
    Report,
    fleet,
    fmt,
    median,
    percentile,
    say,
    timed_run,
)

TARGET_MS = 150.0
TARGET_RATIO = 1.5  # status / `import zmq, msgspec` (issue 14)
AIM_RATIO = 1.2
BASELINES = {
    "zmq, msgspec": "import zmq, msgspec",
    "pass": "pass",
    "fleetctl.cli": "import fleetctl.cli",
}


def run(quick: bool, runs: int) -> Report:
    count = 10 if quick else 20
    report = Report("status", f"`fleetctl status` wall time, {count} invocations per run")
    medians, p90s, ratios, cpu_ratios, cpu_status = [], [], [], [], []
    walls: dict[str, list[float]] = {name: [] for name in BASELINES}
    cpus: dict[str, list[float]] = {name: [] for name in BASELINES}
    # What an installed fleetctl runs: compiled modules (pip compiles them at install). An
    # editable install under PYTHONDONTWRITEBYTECODE=1 would otherwise compile fleetctl and
    # shared from source on every call: 0.12x of the ratio on 2026-12-02.
    subprocess.run([PYTHON, "-m", "compileall", "-q", "fleetctl", "shared"], cwd=REPO, check=True)
    with fleet(2, "status") as f:
        ctl = [FLEETCTL, "--state-dir", str(f.state_dir), "status"]
        commands = {"status": ctl} | {
            name: [PYTHON, "-c", code] for name, code in BASELINES.items()
        }
        for argv in commands.values():
            timed_run(argv, f.env)  # warm the page cache and __pycache__
        for index in range(runs):
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
            for turn in range(count):
                order = list(commands) if turn % 2 == 0 else list(reversed(commands))
                for name in order:
                    samples[name].append(timed_run(commands[name], f.env))
            wall = [w for w, _ in samples["status"]]
            medians.append(median(wall))
            p90s.append(percentile(wall, 90))
            cpu_status.append(median([c for _, c in samples["status"]]))
            for name in BASELINES:
                walls[name].append(median([w for w, _ in samples[name]]))
                cpus[name].append(median([c for _, c in samples[name]]))
            ratios.append(medians[-1] / walls["zmq, msgspec"][-1])
            cpu_ratios.append(cpu_status[-1] / cpus["zmq, msgspec"][-1])
            say(
                f"  status run {index + 1}: median {medians[-1]:.1f} ms, p90 {p90s[-1]:.1f} ms, "
                f"{ratios[-1]:.2f}x import zmq, msgspec"
            )
    med, p90, ratio = median(medians), median(p90s), median(ratios)
    report.check(
        "fleetctl status / python -c 'import zmq, msgspec' (wall)",
        ratio,
        "x",
        f"<= {TARGET_RATIO:g}x (aim {AIM_RATIO:g}x)",
        ratio <= TARGET_RATIO,
        ratios,
    )
    report.check(
        "fleetctl status / import zmq, msgspec (CPU)", median(cpu_ratios), "x", "", None, cpu_ratios
    )
    report.check(
        "fleetctl status median",
        med,
        "ms",
        f"<= {TARGET_MS:g} ms",
        med <= TARGET_MS,
        medians,
        digits=1,
    )
    report.check(
        "fleetctl status p90", p90, "ms", f"<= {TARGET_MS:g} ms", p90 <= TARGET_MS, p90s, digits=1
    )
    for name, code in BASELINES.items():
        report.check(
            f"baseline: python -c '{code}'", median(walls[name]), "ms", "", None, walls[name], 1
        )
    report.check("fleetctl status CPU time", median(cpu_status), "ms", "", None, cpu_status, 1)
    for name, code in BASELINES.items():
        report.check(
            f"python -c '{code}' CPU time", median(cpus[name]), "ms", "", None, cpus[name], 1
        )
    zmq_msgspec = median(walls["zmq, msgspec"])
    report.notes.append(
        f"ratio status / import zmq, msgspec: {fmt(ratio)}x (target {TARGET_RATIO:g}x, aim "
        f"{AIM_RATIO:g}x); status / bare python: {fmt(med / median(walls['pass']))}x; "
        f"zmq and msgspec account for {fmt(zmq_msgspec - median(walls['pass']), 1)} ms, "
        f"the rest of status (our imports, the request, the output) for "
        f"{fmt(med - zmq_msgspec, 1)} ms"
    )
    return report
