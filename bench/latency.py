"""(e) Latency: from an insert's commit to the moment a task starts running, with 2 idle handlers.

One task every 20 ms. The client takes time.time() right after the insert's
commit; the task records time.time() when it starts: for flask-tasks a
"bench_probe" task (bench/probe_tasks.py) returns it as its result; for PGQueuer
(2 idle workers, one job per enqueue call) the "probe" entrypoint writes it to a
table. Latency = start - commit; p50 and p99 in ms.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time

from pgqueuer import Queries

from bench import ours, pgq
from bench.context import Bench, Figures
from bench.pg import Connection, connect, create_schema, execute, scalar
from bench.procs import Processes, wait_until

INTERVAL = 0.02  # seconds between inserts
WAIT = 60.0  # seconds for the last samples to run


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(prefix: str, latencies_ms: list[float]) -> Figures:
    return {f"{prefix}_p50": statistics.median(latencies_ms), f"{prefix}_p99": percentile(latencies_ms, 0.99)}


def probe_ours(conn: Connection, samples: int) -> list[float]:
    """Latencies in ms of `samples` bench_probe tasks inserted one every 20 ms."""
    committed: dict[str, float] = {}
    start = time.monotonic()
    for i in range(samples):
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO tasks (type, args, expire) VALUES ('bench_probe', '{}', now() + interval '1 hour') "
                "RETURNING id::text"
            )
            committed[cur.fetchone()[0]] = time.time()
        time.sleep(max(0.0, start + (i + 1) * INTERVAL - time.monotonic()))
    done = "SELECT count(*) FROM tasks WHERE type = 'bench_probe' AND status = 'done'"
    wait_until(lambda: scalar(conn, done) >= samples, WAIT, 0.02, "all probes done")
    with conn.cursor() as cur:
        cur.execute("SELECT id::text, (result #>> '{}')::float8 FROM tasks WHERE type = 'bench_probe'")
        return [(started - committed[task_id]) * 1000 for task_id, started in cur.fetchall()]


def probe_pgqueuer(url: str, conn: Connection, samples: int) -> list[float]:
    """Latencies in ms of `samples` "probe" jobs enqueued one every 20 ms."""

    async def enqueue(queries: Queries) -> list[float]:
        committed = []
        start = time.monotonic()
        for i in range(samples):
            await queries.enqueue("probe", str(i).encode())
            committed.append(time.time())
            await asyncio.sleep(max(0.0, start + (i + 1) * INTERVAL - time.monotonic()))
        return committed

    committed = pgq.with_queries(url, enqueue)
    wait_until(lambda: scalar(conn, "SELECT count(*) FROM bench_probe") >= samples, WAIT, 0.02, "all probes run")
    with conn.cursor() as cur:
        cur.execute("SELECT sample, started FROM bench_probe")
        return [(started - committed[sample]) * 1000 for sample, started in cur.fetchall()]


def measure(bench: Bench) -> Figures:
    samples = bench.sizes.latency_samples
    with bench.server.fresh_database() as url, Processes(bench.logdir, "latency-ours") as procs:
        create_schema(url)
        ours.start_handlers(procs, url, 2, TASKS_MODULE="bench.probe_tasks")
        conn = connect(url)
        try:
            figures = summary("latency_ours", probe_ours(conn, samples))
        finally:
            conn.close()

    with bench.server.fresh_database() as url, Processes(bench.logdir, "latency-pgq") as procs:
        pgq.install(url)
        conn = connect(url)
        try:
            execute(conn, "CREATE TABLE bench_probe (sample integer PRIMARY KEY, started double precision NOT NULL)")
            pgq.start_workers(procs, url, 2)
            figures.update(summary("latency_pgq", probe_pgqueuer(url, conn, samples)))
        finally:
            conn.close()
    print(
        f"  flask-tasks p50 {figures['latency_ours_p50']:.2f} ms, p99 {figures['latency_ours_p99']:.2f} ms;"
        f" PGQueuer p50 {figures['latency_pgq_p50']:.2f} ms, p99 {figures['latency_pgq_p99']:.2f} ms",
        flush=True,
    )
    return figures
