"""The benchmark harness: `python -m bench.main [--quick] [--runs N]` (bench/run sets up and calls this).

Runs every measurement once per run, in order, on a fresh database each; takes
each figure's median over the runs (ratios are taken within a run first) and
writes the report and the drain plot.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import bloat, drain, enqueue, http_single, janitor_rate, latency, machine, notify_blackhole, plot, report
from bench import celery_yardstick as celery_bench
from bench import hosts as hosts_bench
from bench import listing as listing_bench
from bench import metrics as metrics_bench
from bench import partitions as partitions_bench
from bench.context import FULL, QUICK, Bench, Figures
from bench.pg import Server
from bench.procs import PROJECT_DIR

MEASUREMENTS: dict[str, tuple[Callable[[Bench], Figures], str | None]] = {
    # name: (function, its description for the report)
    "drain": (drain.measure, drain.__doc__),
    "pgq_enqueue": (enqueue.measure_pgq_bulk, None),  # described with http_bulk
    "http_bulk": (enqueue.measure_http_bulk, enqueue.__doc__),
    "http_single": (http_single.measure, http_single.__doc__),
    "latency": (latency.measure, latency.__doc__),
    "janitor": (janitor_rate.measure, janitor_rate.__doc__),
    "bloat": (bloat.measure, bloat.__doc__),
    "notify_blackhole": (notify_blackhole.measure, notify_blackhole.__doc__),
    "metrics": (metrics_bench.measure, metrics_bench.__doc__),
    "listing": (listing_bench.measure, listing_bench.__doc__),
    "hosts": (hosts_bench.measure, hosts_bench.__doc__),
    "partitions": (partitions_bench.measure, partitions_bench.__doc__),
    "celery": (celery_bench.measure, celery_bench.__doc__),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description="Benchmarks of flask-tasks against PGQueuer 1.6.0.")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 run, under a minute")
    parser.add_argument("--runs", type=int, help="runs; each figure is their median (default 3, --quick 1)")
    parser.add_argument("--only", help=f"comma-separated measurements to run (default all): {', '.join(MEASUREMENTS)}")
    parser.add_argument(
        "--out", type=Path, help="folder for BENCHMARKS.md and drain.png (default docs/, --quick bench/out/)"
    )
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.only = [name.strip() for name in args.only.split(",")] if args.only else list(MEASUREMENTS)
    unknown = [name for name in args.only if name not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurement {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    args.out = args.out or PROJECT_DIR / ("bench/out" if args.quick else "docs")
    return args


def run_once(bench: Bench, names: list[str], run: int, runs: int) -> tuple[Figures, int]:
    """One run of the chosen measurements: its figures (ratios included) and how many measurements failed."""
    figures: Figures = {}
    failed = 0
    for name in names:
        print(f"[run {run}/{runs}] {name}", flush=True)
        started = time.monotonic()
        try:
            figures.update(MEASUREMENTS[name][0](bench))
        except Exception as err:
            failed += 1
            traceback.print_exc()
            bench.note(f"{name} failed in run {run}: {' '.join(str(err).split())[:300]}")
        print(f"  ({time.monotonic() - started:.1f} s)", flush=True)
    report.add_ratios(figures)
    return figures, failed


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so every process and database is cleaned up


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    began = time.monotonic()
    logdir = Path(tempfile.mkdtemp(prefix="flask-tasks-bench-logs-"))
    runs: list[Figures] = []
    failed = 0
    server = Server.start()
    try:
        bench = Bench(sizes, server, logdir)
        postgres = server.describe()
        machine_lines = machine.describe(postgres)  # the load average before the bench adds to it
        print(f"bench: {'quick' if args.quick else 'full'} sizes, {args.runs} run(s), {postgres}", flush=True)
        for run in range(1, args.runs + 1):
            figures, run_failed = run_once(bench, args.only, run, args.runs)
            runs.append(figures)
            failed += run_failed
    except BaseException:
        print(f"bench: stopped; the processes' logs are kept in {logdir}", file=sys.stderr)
        raise
    finally:
        server.close()

    median = report.medians(runs)
    descriptions = [doc for name, (_, doc) in MEASUREMENTS.items() if doc and name in args.only]
    text = report.render(runs, machine_lines, sizes, bench.notes, descriptions)
    report.write(args.out / "BENCHMARKS.md", text)
    plot.plot_drain(median, sizes.handler_counts, args.out / "drain.png")
    if "hosts" in args.only:  # (n): docs/hosts.png, and what limits each point
        hosts_bench.finish(median, args.out, args.quick)

    print("\n" + report.summary_table(median), flush=True)
    print(f"\nwrote {args.out / 'BENCHMARKS.md'} and {args.out / 'drain.png'} in {time.monotonic() - began:.0f} s")
    if failed:
        print(f"{failed} measurement(s) failed; their processes' logs are kept in {logdir}", file=sys.stderr)
        return 1
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
