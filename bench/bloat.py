"""(g) Bloat: the size of `tasks` (table and indexes) after a steady flow, against its size with 10,000 live rows.

Baseline: 10,000 tasks inserted into a fresh database and drained by 2
handlers; pg_total_relation_size('tasks'). Flow: 1,000,000 tasks inserted at
10,000 per second (batches of 1,000 every 0.1 s, each expiring 1 s after it is
inserted, as MAX_TASK_TIME=1 would make them), drained by 2 handlers while one
janitor (MAX_TASK_TIME=1, JANITOR_INTERVAL=0.5) deletes them about 1 s after
their creation; the size once the last is drained. Ratio = flow / baseline.
"""

from __future__ import annotations

import time

from bench import ours
from bench.context import Bench, Figures
from bench.pg import Connection, connect, create_schema, execute, insert_noop_tasks, queue_is_empty, scalar
from bench.procs import Processes, wait_until

BATCH = 1000
SIZE = "SELECT pg_total_relation_size('tasks')"


def baseline_bytes(bench: Bench) -> int:
    rows = bench.sizes.bloat_live_rows
    with bench.server.fresh_database() as url, Processes(bench.logdir, "bloat-baseline") as procs:
        create_schema(url)
        ours.start_handlers(procs, url, 2)
        conn = connect(url)
        try:
            insert_noop_tasks(conn, rows)
            wait_until(lambda: queue_is_empty(conn), 60 + rows / 100, 0.05, "the baseline drain")
            return scalar(conn, SIZE)
        finally:
            conn.close()


def steady_flow(conn: Connection, tasks: int, rate: int) -> tuple[float, int]:
    """Insert `tasks` at `rate` per second in batches; the rate achieved and the most rows seen in the table."""
    batches = tasks // BATCH
    start = time.monotonic()
    peak_rows, next_count = 0, start
    for i in range(batches):
        execute(
            conn,
            "INSERT INTO tasks (type, args, expire) SELECT 'noop', '{}', now() + interval '1 second' "
            "FROM generate_series(1, %s)",
            (BATCH,),
        )
        if time.monotonic() >= next_count:  # once a second: how many rows the table holds
            peak_rows = max(peak_rows, scalar(conn, "SELECT count(*) FROM tasks"))
            next_count += 1.0
        time.sleep(max(0.0, start + (i + 1) * BATCH / rate - time.monotonic()))
    return batches * BATCH / (time.monotonic() - start), peak_rows


def measure(bench: Bench) -> Figures:
    baseline = baseline_bytes(bench)
    with bench.server.fresh_database() as url, Processes(bench.logdir, "bloat-flow") as procs:
        create_schema(url)
        ours.start_handlers(procs, url, 2, MAX_TASK_TIME="1")
        ours.start_janitor(procs, url, MAX_TASK_TIME="1", JANITOR_INTERVAL="0.5")
        conn = connect(url)
        try:
            rate, peak_rows = steady_flow(conn, bench.sizes.bloat_tasks, bench.sizes.BLOAT_RATE)
            wait_until(lambda: queue_is_empty(conn), 120, 0.05, "the end of the flow")
            end = scalar(conn, SIZE)
        finally:
            conn.close()
    mib = 1024 * 1024
    print(
        f"  {bench.sizes.bloat_tasks:,} tasks at {rate:,.0f}/s (at most {peak_rows:,} rows at once):"
        f" {end / mib:.1f} MiB at the end vs {baseline / mib:.1f} MiB with {bench.sizes.bloat_live_rows:,} live rows",
        flush=True,
    )
    return {
        "bloat_end_mb": end / mib,
        "bloat_baseline_mb": baseline / mib,
        "bloat_insert_rate": rate,
        "bloat_peak_rows": peak_rows,
    }
