"""`python -m bench [NAME ...] [--quick] [--runs N]`: agent-fleet's benchmark suite.

Each benchmark starts its own fleetd (`python -m fleetd --foreground`) in a short temporary
state directory, measures, and stops it. Figures are medians over `--runs` runs, printed with
their targets and a baseline measured in the same run. Exit status 1 if any target is missed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from bench import peers
from bench.common import OUT_DIR, STATE_ROOT, Report, load, machine, say

BENCHMARKS = {
    "dispatch": "bench.dispatch",
    "throughput": "bench.throughput",
    "ingestion": "bench.ingestion",
    "status": "bench.status",
    "memory": "bench.memory",
    "scale": "bench.scale",
    "web": "bench.web",
    "nodes": "bench.nodes",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs")
    parser.add_argument("--runs", type=int, default=None, help="runs per benchmark (default 3)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    names = args.names or list(BENCHMARKS)
    runs = args.runs or (2 if args.quick else 3)
    info = machine()
    print(
        f"agent-fleet benchmarks{' (quick)' if args.quick else ''}: {runs} runs each; "
        f"{info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python {info['python']}; "
        f"state dirs under {STATE_ROOT}",
        flush=True,
    )
    reports: list[Report] = []
    rendered: list[str] = []
    started = time.monotonic()
    for name in names:
        say(f"-- {name} ...")
        begun = time.monotonic()
        before = load()
        module = importlib.import_module(BENCHMARKS[name])
        report: Report = module.run(args.quick, runs)
        report.notes.append(f"machine before: {before}")
        report.notes.append(f"machine after:  {load()}")
        reports.append(report)
        text = report.render()
        print("\n" + text, flush=True)
        rendered.append(text)
        say(f"-- {name} took {time.monotonic() - begun:.1f} s")
    missed = [(r.name, c.metric) for r in reports for c in r.missed]
    print(f"\n{len(reports)} benchmark(s) in {time.monotonic() - started:.0f} s; ", end="")
    print(
        "all targets met" if not missed else "missed: " + "; ".join(f"{n}: {c}" for n, c in missed)
    )
    field = peers.summary(peers.last_run())  # the peers run apart from this suite
    print(field)
    rendered.append(field)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; {runs} runs; "
        f"{info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python {info['python']}; "
        f"state dirs under {STATE_ROOT}"
    )
    (OUT_DIR / "last-run.txt").write_text("\n\n".join([header, *rendered]) + "\n")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
