"""(m) GET /metrics with 1,000,000 tasks stored: p50 and p99 of a scrape over HTTP, and the recount behind it.

One statement stores 1,000,000 tasks (generate_series) of 10 types, with statuses mixed as
a busy queue's (70% done, 10% failed, 5% cancelled, 10% waiting, 5% running), then ANALYZE;
task_stats gets the counters of 40 processes gone and 4 alive handlers are recorded in
`workers`. The recount (`stats.refresh_counts`, what a janitor runs every STATS_INTERVAL)
is timed 3 times in process, median taken. Then flask-tasks' web (gunicorn, 2 sync
workers, STATS_INTERVAL=3600 so no scrape recounts) answers 200 scrapes in a row from
loopback (20 first, untimed); p50 and p99 of their times, in ms.
"""

from __future__ import annotations

import statistics
import time
import urllib.request

from bench import ours
from bench.context import Bench, Figures
from bench.pg import connect, create_schema, execute, scalar
from bench.procs import Processes, free_port, server_env

TYPES = ["add", "divide", "echo", "fibonacci", "mov3d", "multiply", "noop", "prime", "sleep", "report"]
WARMUP, SCRAPES, RECOUNTS = 20, 200, 3

INSERT_TASKS = """
INSERT INTO tasks (type, args, status, attempts, created, started, finished, expire, run_at, lease_until, worker)
SELECT (%(types)s::text[])[1 + i %% 10],
       '{}',
       s.status,
       CASE WHEN s.status = 'waiting' THEN 0 ELSE 1 END,
       now() - make_interval(secs => i %% 86400),
       CASE WHEN s.status <> 'waiting' THEN now() - make_interval(secs => i %% 86400) END,
       CASE WHEN s.status IN ('done', 'failed', 'cancelled') THEN now() - make_interval(secs => i %% 86400) END,
       now() + interval '7 days',
       now() - make_interval(secs => i %% 86400),
       CASE WHEN s.status = 'running' THEN now() + interval '1 hour' END,
       CASE WHEN s.status <> 'waiting' THEN 'bench-' || (i %% 4) END
FROM generate_series(1, %(tasks)s) AS i
CROSS JOIN LATERAL (SELECT CASE WHEN i %% 20 < 14 THEN 'done' WHEN i %% 20 < 16 THEN 'failed'
                                WHEN i %% 20 = 16 THEN 'cancelled' WHEN i %% 20 < 19 THEN 'waiting'
                                ELSE 'running' END AS status) s
"""
# The counters 40 processes gone left (one row each per type), and 4 handlers alive.
INSERT_STATS = """
INSERT INTO task_stats (worker, type, done, failed, retried, seconds_sum, seconds_buckets)
SELECT gen_random_uuid(), t, 1000, 50, 20, 123.4, array_fill(70::bigint, ARRAY[%(buckets)s])
FROM generate_series(1, 40), unnest(%(types)s::text[]) AS t;
INSERT INTO workers (id, kind, name, host, pid, task_types)
SELECT gen_random_uuid(), 'handler', 'bench-' || i, 'bench', 1000 + i, %(types)s::text[] FROM generate_series(0, 3) i;
"""


def scrape_ms(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
        if response.status != 200 or b"flask_tasks_tasks{" not in body:
            raise RuntimeError(f"GET /metrics answered {response.status}: {body[:300]!r}")
    return (time.perf_counter() - started) * 1000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(bench: Bench) -> Figures:
    from flask_tasks import stats

    tasks = bench.sizes.metrics_tasks
    with bench.server.fresh_database() as url, Processes(bench.logdir, "metrics") as procs:
        create_schema(url)
        conn = connect(url)
        try:
            execute(conn, INSERT_TASKS, {"types": TYPES, "tasks": tasks})
            execute(conn, INSERT_STATS, {"types": TYPES, "buckets": len(stats.DURATION_BUCKETS) + 1})
            execute(conn, "ANALYZE tasks")
            recounts = []
            for _ in range(RECOUNTS):
                started = time.perf_counter()
                if not stats.refresh_counts(conn, 0):
                    raise RuntimeError("refresh_counts did not count")
                recounts.append(time.perf_counter() - started)
            counted = scalar(conn, "SELECT sum(tasks) FROM task_counts")
            if counted != tasks:
                raise RuntimeError(f"task_counts holds {counted} tasks, not {tasks}")
            size_mb = scalar(conn, "SELECT pg_total_relation_size('tasks')") / 2**20
        finally:
            conn.close()

        port = free_port()
        env = server_env(url, PORT=str(port), GUNICORN_WORKERS="2", GUNICORN_THREADS="1", STATS_INTERVAL="3600")
        ours.start_gunicorn(procs, "web", ["app:app", "-c", "gunicorn.conf.py"], port, env)
        target = f"http://127.0.0.1:{port}/metrics"
        for _ in range(WARMUP):
            scrape_ms(target)
        times = [scrape_ms(target) for _ in range(SCRAPES)]
    p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
    recount = statistics.median(recounts)
    print(
        f"  metrics: {tasks:,} tasks ({size_mb:,.0f} MiB with indexes); scrape p50 {p50:.2f} ms, p99 {p99:.2f} ms;"
        f" recount {recount * 1000:,.0f} ms",
        flush=True,
    )
    return {"metrics_scrape_p50": p50, "metrics_scrape_p99": p99, "metrics_recount_ms": recount * 1000}
