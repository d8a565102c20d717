"""docs/BENCHMARKS.md: the figures' medians against their targets, every run's numbers, the machine.

Only the part above "## Profile and changes" is generated; that section, written
by hand, is kept as it is when the file is rewritten.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import hosts, partitions
from bench.context import Figures, Sizes

PROFILE_HEADER = "## Profile and changes"
PROFILE_PLACEHOLDER = f"""{PROFILE_HEADER}

_This section is written by hand: what the profiles showed and what was changed
because of it. `bench/run` keeps it as it is and regenerates only the part of
this file above it._
"""


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    digits: int = 0  # decimals shown


# Every figure a run can produce, in the order of the raw table.
METRICS = [
    *(Metric(f"drain_ours_{n}", f"(a) drain, flask-tasks, {n} handler(s), tasks/s") for n in (1, 2, 4)),
    *(Metric(f"drain_pgq_{n}", f"(a) drain, PGQueuer, {n} worker(s), jobs/s") for n in (1, 2, 4)),
    *(Metric(f"drain_ratio_{n}", f"(a) drain ratio flask-tasks / PGQueuer, {n} process(es)", 2) for n in (1, 2, 4)),
    Metric("drain_ours_2_large", "(a) drain of 100,000, flask-tasks, 2 handlers, tasks/s"),
    Metric("drain_pgq_2_large", "(a) drain of 100,000, PGQueuer, 2 workers, jobs/s"),
    Metric("drain_ratio_2_large", "(a) drain of 100,000, ratio flask-tasks / PGQueuer, 2 processes", 2),
    Metric("pgq_enqueue", "(b) PGQueuer bulk enqueue in process, 2 connections, calls of 1,000, jobs/s"),
    Metric("http_bulk", "(c) bulk enqueue over HTTP, 2 clients, arrays of 1,000, tasks/s"),
    Metric("http_bulk_ratio", "(c) ratio to (b)", 2),
    Metric("http_bulk_minimal", "(c) the same with Prefer: return=minimal (only the ids answered), tasks/s"),
    Metric("http_bulk_minimal_ratio", "(c) ratio with return=minimal to (b)", 2),
    Metric("http_single_ours", "(d) single enqueue over HTTP, flask-tasks (8 threads a worker), req/s"),
    Metric("http_single_ours_sync", "(d) the same with 1 thread a worker (each request commits alone), req/s"),
    Metric("http_single_group_bought", "(d) ratio flask-tasks default / 1 thread a worker", 2),
    Metric("http_single_ours_group", "(d) flask-tasks, 8 threads a worker, GROUP_COMMIT=true, req/s"),
    Metric("http_single_with_group", "(d) ratio flask-tasks with GROUP_COMMIT=true / default", 2),
    Metric("http_single_bare", "(d) single enqueue over HTTP, bare Flask (2 sync workers), req/s"),
    Metric("http_single_ratio", "(d) ratio flask-tasks / bare Flask", 2),
    Metric("http_single_bare_threads", "(d) bare Flask under flask-tasks' settings (2 workers of 8 threads), req/s"),
    Metric("http_single_threads_ratio", "(d) ratio flask-tasks / bare Flask with 8 threads a worker", 2),
    Metric("http_single_bare_insert", "(d) bare Flask + one INSERT, durable commit, req/s"),
    Metric("http_single_floor_ratio", "(d) ratio bare Flask + one INSERT / bare Flask", 2),
    Metric("http_single_of_floor", "(d) ratio flask-tasks / bare Flask + one INSERT", 2),
    Metric("http_single_bare_group", "(d) bare Flask + the INSERT group-committed, 8 threads a worker, req/s"),
    Metric("http_single_group_ratio", "(d) ratio bare Flask + group-committed INSERT / bare Flask", 2),
    Metric("http_single_of_group", "(d) ratio flask-tasks / bare Flask + group-committed INSERT", 2),
    Metric("http_single_non2xx", "(d) wrk non-2xx answers, flask-tasks"),
    Metric("latency_ours_p50", "(e) latency p50, flask-tasks, ms", 2),
    Metric("latency_ours_p99", "(e) latency p99, flask-tasks, ms", 2),
    Metric("latency_pgq_p50", "(e) latency p50, PGQueuer, ms", 2),
    Metric("latency_pgq_p99", "(e) latency p99, PGQueuer, ms", 2),
    Metric("janitor_rows_per_s", "(f) janitor, rows deleted/s"),
    Metric("janitor_seconds", "(f) janitor, seconds to delete them all", 2),
    Metric("janitor_drain_without", "(f) drain of 2 handlers without the janitor, tasks/s"),
    Metric("janitor_drain_during", "(f) drain of 2 handlers during the janitor, tasks/s"),
    Metric("janitor_drain_ratio", "(f) drain ratio during / without", 2),
    Metric("janitor_drain_seconds", "(f) drain during the janitor, seconds", 2),
    Metric("bloat_end_mb", "(g) tasks size after the flow, MiB", 1),
    Metric("bloat_baseline_mb", "(g) tasks size with 10,000 live rows, MiB", 1),
    Metric("bloat_ratio", "(g) size ratio flow / live rows", 2),
    Metric("bloat_insert_rate", "(g) insert rate achieved, tasks/s"),
    Metric("bloat_peak_rows", "(g) most rows in the table during the flow"),
    Metric("rss_handler_mb", "(h) peak RSS of a handler after its drain, MiB", 1),
    Metric("rss_web_worker_mb", "(h) peak RSS of a web worker after wrk (the larger of 2), MiB", 1),
    Metric("notify_blackhole_normal", "(i) drain of 2 handlers, no delivery due, tasks/s"),
    Metric("notify_blackhole_hung", "(i) drain of 2 handlers, 1,000 deliveries to a black hole, tasks/s"),
    Metric("notify_blackhole_ratio", "(i) drain ratio black hole / normal", 2),
    Metric("notify_blackhole_held", "(i) connections the black hole held during the drains (fewest seen)"),
    Metric("metrics_scrape_p50", "(m) GET /metrics p50 with 1,000,000 tasks stored, ms", 2),
    Metric("metrics_scrape_p99", "(m) GET /metrics p99 with 1,000,000 tasks stored, ms", 2),
    Metric("metrics_recount_ms", "(m) recount of task_counts (the janitor's, every STATS_INTERVAL), ms", 1),
    *(
        Metric(f"listing_{key}_{p}", f"(l) GET /task, page of 50, {label}, {p}, ms", 2)
        for key, label in (("status_type", "status and type"), ("status", "status only"), ("all", "no filter"))
        for p in ("p50", "p99")
    ),
    *(Metric(*row) for row in hosts.METRICS),
    *(
        Metric(f"partitions_{side}_{key}", f"(p) {name}: {label}", digits)
        for side, name in (("today", "today's table"), ("part", "partitioned"))
        for key, label, digits in (
            ("drain", "churn of 1,000,000 tasks, tasks/s", 0),
            ("handler_cpu_us", "handlers' backend CPU per task, µs", 1),
            ("janitor_cpu_us", "janitor's backend CPU per task, µs", 1),
            ("get_task_us", "get_task by id, median µs", 0),
            ("peak_mb", "largest size of tables and indexes, MiB", 1),
            ("janitor_wal_mb", "janitor's WAL, MiB", 1),
            ("wal_mb", "WAL of the churn, MiB", 0),
        )
    ),
    *(Metric(f"partitions_ratio_{key}", f"(p) ratio partitioned / today: {key}", 2) for key in partitions.RATIOS),
    Metric("celery_http_single_ours", "(y) single enqueue over HTTP, flask-tasks, req/s"),
    Metric("celery_http_single", "(y) single enqueue over HTTP, Flask + Celery `.delay()`, req/s"),
    Metric("celery_single_ratio", "(y) single enqueue ratio flask-tasks / Flask + Celery", 2),
    Metric("celery_drain_ours", "(y) drain of 20,000, flask-tasks, 2 handlers, tasks/s"),
    Metric("celery_drain_default", "(y) drain of 20,000, Celery defaults (prefork -c 2, results stored), tasks/s"),
    Metric("celery_drain_best_acked", "(y) drain of 20,000, Celery best with acks (2 solo, no results), tasks/s"),
    Metric("celery_drain_best", "(y) drain of 20,000, Celery best, no ack emulation (at most once), tasks/s"),
    Metric("celery_drain_ratio_default", "(y) drain ratio flask-tasks / Celery defaults", 2),
    Metric("celery_drain_ratio_best_acked", "(y) drain ratio flask-tasks / Celery best with acks", 2),
    Metric("celery_drain_ratio_best", "(y) drain ratio flask-tasks / Celery best, at most once", 2),
    Metric("celery_latency_p50", "(y) latency p50, Celery best, send to start, ms", 2),
    Metric("celery_latency_p99", "(y) latency p99, Celery best, send to start, ms", 2),
    Metric("celery_latency_ratio_p50", "(y) latency p50 ratio flask-tasks (e) / Celery", 2),
    Metric("celery_latency_ratio_p99", "(y) latency p99 ratio flask-tasks (e) / Celery", 2),
]
DIGITS = {m.key: m.digits for m in METRICS}


def add_ratios(figures: Figures) -> None:
    """The ratios of one run, from that run's own figures."""

    def ratio(key: str, top: str, bottom: str) -> None:
        a, b = figures.get(top), figures.get(bottom)
        figures[key] = a / b if a is not None and b else None

    for n in (1, 2, 4):
        ratio(f"drain_ratio_{n}", f"drain_ours_{n}", f"drain_pgq_{n}")
    ratio("drain_ratio_2_large", "drain_ours_2_large", "drain_pgq_2_large")
    ratio("http_bulk_ratio", "http_bulk", "pgq_enqueue")
    ratio("http_bulk_minimal_ratio", "http_bulk_minimal", "pgq_enqueue")
    ratio("http_single_ratio", "http_single_ours", "http_single_bare")
    ratio("http_single_group_bought", "http_single_ours", "http_single_ours_sync")
    ratio("http_single_with_group", "http_single_ours_group", "http_single_ours")
    ratio("http_single_threads_ratio", "http_single_ours", "http_single_bare_threads")
    ratio("http_single_floor_ratio", "http_single_bare_insert", "http_single_bare")
    ratio("http_single_of_floor", "http_single_ours", "http_single_bare_insert")
    ratio("http_single_group_ratio", "http_single_bare_group", "http_single_bare")
    ratio("http_single_of_group", "http_single_ours", "http_single_bare_group")
    ratio("janitor_drain_ratio", "janitor_drain_during", "janitor_drain_without")
    ratio("bloat_ratio", "bloat_end_mb", "bloat_baseline_mb")
    ratio("notify_blackhole_ratio", "notify_blackhole_hung", "notify_blackhole_normal")
    ratio("celery_single_ratio", "celery_http_single_ours", "celery_http_single")
    ratio("celery_drain_ratio_default", "celery_drain_ours", "celery_drain_default")
    ratio("celery_drain_ratio_best_acked", "celery_drain_ours", "celery_drain_best_acked")
    ratio("celery_drain_ratio_best", "celery_drain_ours", "celery_drain_best")
    ratio("celery_latency_ratio_p50", "latency_ours_p50", "celery_latency_p50")  # when (e) ran too
    ratio("celery_latency_ratio_p99", "latency_ours_p99", "celery_latency_p99")


def medians(runs: list[Figures]) -> Figures:
    keys = {key for run in runs for key in run}
    out: Figures = {}
    for key in keys:
        values = [run[key] for run in runs if run.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    return out


def fmt(figures: Figures, key: str) -> str:
    value = figures.get(key)
    if value is None:
        return "—"
    return f"{value:,.{DIGITS.get(key, 0)}f}"


@dataclass(frozen=True)
class Target:
    figure: str
    ours: str  # key of our figure
    reference: str  # what it is compared with
    reference_key: str | None
    ratio_key: str | None
    target: str
    met: Callable[[Figures], bool | None]


def _check(key: str, test: Callable[[float], bool]) -> Callable[[Figures], bool | None]:
    return lambda figures: None if figures.get(key) is None else test(figures[key])  # type: ignore[arg-type]


TARGETS = [
    Target(
        "(a) drain, 2 handlers, tasks/s",
        "drain_ours_2",
        "PGQueuer, 2 workers, jobs/s",
        "drain_pgq_2",
        "drain_ratio_2",
        "ratio ≥ 2",
        _check("drain_ratio_2", lambda r: r >= 2),
    ),
    Target(
        "(a) drain of 100,000, 2 handlers, tasks/s",
        "drain_ours_2_large",
        "PGQueuer, 2 workers, jobs/s",
        "drain_pgq_2_large",
        "drain_ratio_2_large",
        "ratio ≥ 2",
        _check("drain_ratio_2_large", lambda r: r >= 2),
    ),
    Target(
        "(c) bulk enqueue over HTTP, Prefer: return=minimal, tasks/s",
        "http_bulk_minimal",
        "(b) PGQueuer bulk enqueue in process, same concurrency, jobs/s",
        "pgq_enqueue",
        "http_bulk_minimal_ratio",
        "ratio ≥ 1",
        _check("http_bulk_minimal_ratio", lambda r: r >= 1),
    ),
    Target(
        "(c) the same, every task answered in full (the default)",
        "http_bulk",
        "(b) PGQueuer bulk enqueue in process, same concurrency, jobs/s",
        "pgq_enqueue",
        "http_bulk_ratio",
        "—",
        lambda f: None,
    ),
    Target(
        "(d) single enqueue over HTTP, req/s",
        "http_single_ours",
        "bare Flask app (2 sync workers), req/s",
        "http_single_bare",
        "http_single_ratio",
        "ratio ≥ 0.45, 0 non-2xx",
        lambda f: (
            None
            if f.get("http_single_ratio") is None
            else f["http_single_ratio"] >= 0.45 and f.get("http_single_non2xx") == 0
        ),  # type: ignore[operator]
    ),
    Target(
        "(d) the same, against bare Flask under the same gunicorn settings",
        "http_single_ours",
        "bare Flask app, 2 workers of 8 threads, req/s",
        "http_single_bare_threads",
        "http_single_threads_ratio",
        "—",
        lambda figures: None,
    ),
    Target(
        "(d) what 8 threads a worker bought",
        "http_single_ours",
        "flask-tasks with 1 thread a worker (each request commits alone), req/s",
        "http_single_ours_sync",
        "http_single_group_bought",
        "—",
        lambda figures: None,
    ),
    Target(
        "(d) flask-tasks with GROUP_COMMIT=true, against its default",
        "http_single_ours_group",
        "flask-tasks as it starts (8 threads a worker), req/s",
        "http_single_ours",
        "http_single_with_group",
        "—",
        lambda figures: None,
    ),
    Target(
        "(d) the same, against the database's floor",
        "http_single_ours",
        "bare Flask + one plain INSERT (durable commit), req/s",
        "http_single_bare_insert",
        "http_single_of_floor",
        "—",
        lambda figures: None,
    ),
    Target(
        "(d) the same, against batching at best",
        "http_single_ours",
        "bare Flask + the INSERT group-committed (2 workers of 8 threads), req/s",
        "http_single_bare_group",
        "http_single_of_group",
        "—",
        lambda figures: None,
    ),
    Target(
        "(e) latency p50, ms",
        "latency_ours_p50",
        "PGQueuer p50, ms",
        "latency_pgq_p50",
        None,
        "< 2 ms",
        _check("latency_ours_p50", lambda v: v < 2),
    ),
    Target(
        "(e) latency p99, ms",
        "latency_ours_p99",
        "PGQueuer p99, ms",
        "latency_pgq_p99",
        None,
        "< 10 ms",
        _check("latency_ours_p99", lambda v: v < 10),
    ),
    Target(
        "(f) janitor, rows/s",
        "janitor_rows_per_s",
        "",
        None,
        None,
        "≥ 50,000/s",
        _check("janitor_rows_per_s", lambda v: v >= 50_000),
    ),
    Target(
        "(f) 2 handlers' drain during the janitor, tasks/s",
        "janitor_drain_during",
        "without the janitor, tasks/s",
        "janitor_drain_without",
        "janitor_drain_ratio",
        "not stalled",
        lambda figures: None,
    ),
    Target(
        "(g) bloat: tasks size after the flow, MiB",
        "bloat_end_mb",
        "with 10,000 live rows, MiB",
        "bloat_baseline_mb",
        "bloat_ratio",
        "ratio ≤ 3",
        _check("bloat_ratio", lambda r: r <= 3),
    ),
    Target(
        "(h) peak RSS of a handler after its drain, MiB",
        "rss_handler_mb",
        "a web worker after wrk, MiB",
        "rss_web_worker_mb",
        None,
        "—",
        lambda figures: None,
    ),
    Target(
        "(i) 2 handlers' drain, 1,000 deliveries hanging on a black hole, tasks/s",
        "notify_blackhole_hung",
        "no delivery due, tasks/s",
        "notify_blackhole_normal",
        "notify_blackhole_ratio",
        "ratio ≥ 0.9",
        _check("notify_blackhole_ratio", lambda r: r >= 0.9),
    ),
    Target(
        "(m) GET /metrics p99 with 1,000,000 tasks stored, ms",
        "metrics_scrape_p99",
        "the recount behind it (janitor, every STATS_INTERVAL), ms",
        "metrics_recount_ms",
        None,
        "< 100 ms",
        _check("metrics_scrape_p99", lambda v: v < 100),
    ),
    Target(
        "(l) GET /task p99, page of 50 by status and type, 1,000,000 tasks stored, ms",
        "listing_status_type_p99",
        "p50, ms",
        "listing_status_type_p50",
        None,
        "< 20 ms",
        _check("listing_status_type_p99", lambda v: v < 20),
    ),
    Target(
        "(n) drain across hosts, 4 handlers, 10 ms RTT added, tasks/s",
        "hosts_10ms_4",
        "4 handlers on loopback, tasks/s",
        "hosts_loop_4",
        "hosts_ratio_10ms_4",
        "≥ 0.5",
        _check("hosts_ratio_10ms_4", lambda v: v >= 0.5),
    ),
    Target(
        "(l) GET /task p99, by status only / no filter, ms",
        "listing_status_p99",
        "no filter, ms",
        "listing_all_p99",
        None,
        "—",
        lambda figures: None,
    ),
]


def summary_table(figures: Figures) -> str:
    lines = [
        "| figure | flask-tasks | compared with | their figure | ratio | target | met |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for t in TARGETS:
        met = {True: "yes", False: "**no**", None: "—"}[t.met(figures)]
        reference = fmt(figures, t.reference_key) if t.reference_key else ""
        ratio = fmt(figures, t.ratio_key) if t.ratio_key else ""
        lines.append(
            f"| {t.figure} | {fmt(figures, t.ours)} | {t.reference} | {reference} | {ratio} | {t.target} | {met} |"
        )
    return "\n".join(lines)


def raw_table(runs: list[Figures], median: Figures) -> str:
    head = " | ".join(f"run {i}" for i in range(1, len(runs) + 1))
    lines = [f"| figure | {head} | median |", "|---|" + "---:|" * (len(runs) + 1)]
    for metric in METRICS:
        if all(run.get(metric.key) is None for run in runs):
            continue
        cells = " | ".join(fmt(run, metric.key) for run in runs)
        lines.append(f"| {metric.label} | {cells} | {fmt(median, metric.key)} |")
    return "\n".join(lines)


def sizes_text(sizes: Sizes) -> str:
    return (
        f"drain {sizes.drain_tasks:,} tasks with {', '.join(map(str, sizes.handler_counts))} handlers"
        f" and {sizes.drain_tasks_large:,} with 2;"
        f" bulk enqueue: 2 PGQueuer connections and 2 HTTP clients, {sizes.http_bulk_requests} calls or requests"
        f" of {sizes.HTTP_BATCH:,} each; wrk {sizes.wrk_seconds} s; {sizes.latency_samples} latency samples;"
        f" janitor {sizes.janitor_rows:,} rows with a drain of {sizes.janitor_drain_tasks:,};"
        f" bloat flow {sizes.bloat_tasks:,} tasks at {sizes.BLOAT_RATE:,}/s;"
        f" black hole: drains of {sizes.drain_tasks:,} with 1,000 deliveries hanging;"
        f" /metrics with {sizes.metrics_tasks:,} tasks stored;"
        f" GET /task with {sizes.listing_tasks:,} tasks stored, {sizes.listing_samples} pages of each listing;"
        f" (n) hosts: {hosts.FULL_SIZES.tasks:,} tasks per drain; (p) partitions: a churn of"
        f" {partitions.FULL.tasks:,} tasks a side;"
        f" (a), (b), (c) and (i) measured {sizes.repeats} times in each run, their median taken"
    )


HOW_TO_RUN = """\
## How to run

```bash
bench/run             # full sizes, 3 runs; rewrites this file (above "Profile and changes") and docs/drain.png
bench/run --quick     # smoke run for CI: tiny sizes, 1 run, under a minute; writes bench/out/ instead
bench/run --runs 5    # every figure is the median of the runs; each ratio is taken within a run, then its median
bench/run --only drain,latency    # some measurements only
BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres bench/run   # another server
```

`bench/run` creates or reuses `.venv`, installs `requirements-dev.txt` and
`bench/requirements.txt` (PGQueuer 1.6.0 with asyncpg, Celery 5.7.0 with redis, matplotlib), installs
`wrk` with apt-get when it is missing and the user is root (otherwise install
it yourself; without it the single-enqueue figure is skipped), then runs
`python -m bench.main`. Without `BENCH_DATABASE_URL` it starts an embedded
PostgreSQL in a temporary directory and deletes it at the end.
The Celery yardstick (y) needs a Redis server at `BENCH_REDIS_URL` (default
`redis://127.0.0.1:6379`; it uses and flushes dbs 13, 14 and 15); without one,
its figures are skipped with a note.

Each measurement uses a fresh database (created, then dropped `WITH (FORCE)`).
The server runs as separate processes, as in production: `python handler.py`,
`python janitor.py`, `gunicorn app:app -c gunicorn.conf.py`, with
`FLASK_TASKS_ENV_FILE=""` (no `.env`) and the settings each measurement names;
every other setting is the default, or what the caller's environment sets
(`POLL_INTERVAL`, for instance). Handlers log at the default `INFO` into a file.
Every process is stopped (SIGTERM, then SIGKILL) when its measurement ends,
failed or not; a failed measurement is reported and the others still run.
Run it on an otherwise idle machine: the bench shares 2 cores with PostgreSQL,
and the load average when it started is recorded below.
"""


def render(runs: list[Figures], machine: list[str], sizes: Sizes, notes: list[str], descriptions: list[str]) -> str:
    median = medians(runs)
    parts = [
        "# Benchmarks",
        "",
        "_Generated by `bench/run`: everything above “Profile and changes” is rewritten by each run._",
        "",
        HOW_TO_RUN,
        "## Machine",
        "",
        *(f"- {line}" for line in machine),
        f"- sizes: {sizes_text(sizes)}",
        "",
        f"## Results: medians of {len(runs)} run{'s' if len(runs) != 1 else ''}",
        "",
        summary_table(median),
        "",
        "![drain rate against handler count](drain.png)",
        "",
    ]
    if any(key.startswith("hosts_") and value is not None for key, value in median.items()):
        counts, modes = hosts.FULL_SIZES.handler_counts, hosts.FULL_SIZES.modes
        parts += [
            "![drain rate across hosts against handler count, by round trip added](hosts.png)",
            "",
            "(n) what limits each point (medians):",
            "",
            hosts.limits_table(median, counts, modes),
            "",
        ]
    if notes:
        parts += ["Notes:", "", *(f"- {note}" for note in notes), ""]
    parts += ["## Every run", "", raw_table(runs, median), "", "## What is measured", ""]
    parts += [f"- {' '.join(text.split())}" for text in descriptions]
    return "\n".join(parts) + "\n\n"


def write(path: Path, generated: str) -> None:
    """Write `generated` above the kept "Profile and changes" section (or its placeholder)."""
    kept = PROFILE_PLACEHOLDER
    if path.exists():
        match = re.search(rf"^{re.escape(PROFILE_HEADER)}\s*$", path.read_text(), re.MULTILINE)
        if match:
            kept = path.read_text()[match.start() :]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generated + kept)
