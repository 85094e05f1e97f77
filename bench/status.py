"""(d) `fleetctl status` wall time against a running fleet, as a user runs it.

Baseline in the same run: `python -c pass` with the same interpreter (bare start-up), and
`python -c "import fleetctl.app"` (start-up plus imports, no request) to split the cost.
Also shown: the CPU time (user + system) each of those took, which a loaded shared machine
inflates much less than the wall time.
"""

from __future__ import annotations

from bench.common import FLEETCTL, PYTHON, Report, fleet, fmt, median, percentile, say, timed_run

TARGET_MS = 150.0


def run(quick: bool, runs: int) -> Report:
    count = 10 if quick else 20
    report = Report("status", f"`fleetctl status` wall time, {count} invocations per run")
    medians, p90s, bare, imports = [], [], [], []
    cpu_status, cpu_bare, cpu_imports = [], [], []
    with fleet(2, "status") as f:
        ctl = [FLEETCTL, "--state-dir", str(f.state_dir), "status"]
        _wall(ctl, f.env)  # warm the page cache and __pycache__
        for index in range(runs):
            runs_ = [timed_run(ctl, f.env) for _ in range(count)]
            samples = [w for w, _ in runs_]
            cpu_status.append(median([c for _, c in runs_]))
            runs_ = [timed_run([PYTHON, "-c", "pass"], f.env) for _ in range(count)]
            bare.append(median([w for w, _ in runs_]))
            cpu_bare.append(median([c for _, c in runs_]))
            runs_ = [timed_run([PYTHON, "-c", "import fleetctl.app"], f.env) for _ in range(count)]
            imports.append(median([w for w, _ in runs_]))
            cpu_imports.append(median([c for _, c in runs_]))
            medians.append(median(samples))
            p90s.append(percentile(samples, 90))
            say(f"  status run {index + 1}: median {medians[-1]:.1f} ms, p90 {p90s[-1]:.1f} ms")
    med, p90 = median(medians), median(p90s)
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
    report.check("baseline: python -c pass", median(bare), "ms", "", None, bare, digits=1)
    report.check(
        "python -c 'import fleetctl.app'", median(imports), "ms", "", None, imports, digits=1
    )
    report.check("fleetctl status CPU time", median(cpu_status), "ms", "", None, cpu_status, 1)
    report.check("python -c pass CPU time", median(cpu_bare), "ms", "", None, cpu_bare, 1)
    report.check(
        "import fleetctl.app CPU time", median(cpu_imports), "ms", "", None, cpu_imports, 1
    )
    report.notes.append(
        f"ratio status / bare python: {fmt(med / median(bare))}x; imports account for "
        f"{fmt(median(imports) - median(bare), 1)} ms, the request and output for "
        f"{fmt(med - median(imports), 1)} ms"
    )
    return report


def _wall(argv: list[str], env: dict[str, str]) -> float:
    return timed_run(argv, env)[0]
