"""(l) GET /task with 1,000,000 tasks stored: p50 and p99 of a page of 50 over HTTP, filtered by status and type,
by status only, and not at all.

One statement stores 1,000,000 tasks (generate_series) of 10 types, with statuses mixed as a
busy queue's (70% done, 10% failed, 5% cancelled, 10% waiting, 5% running) and created over the
last day, then VACUUM ANALYZE. flask-tasks' web (gunicorn, 2 sync workers) answers from loopback,
where nothing configured makes the request an operator's (it lists every task). Each listing is
asked 300 times in a row (20 first, untimed), going round the statuses and types
(`status=failed&type=prime&limit=50`, then the next pair...); every third request is the page after
the previous one of the same filters (its `next` cursor), so later pages are timed too. p50 and p99
in ms.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.request

from bench import ours
from bench.context import Bench, Figures
from bench.metrics import TYPES, percentile
from bench.pg import connect, create_schema, execute, scalar
from bench.procs import Processes, free_port, server_env

WARMUP = 20
STATUSES = ("waiting", "running", "done", "failed", "cancelled")
# Each type has every status (the status follows i / 10, the type i % 10); 11 or 12 tasks share each second.
INSERT_TASKS = """
INSERT INTO tasks (type, args, status, attempts, created, started, finished, expire, run_at, worker, last_error)
SELECT (%(types)s::text[])[1 + i %% 10],
       jsonb_build_object('n', i),
       s.status,
       CASE WHEN s.status = 'waiting' THEN 0 ELSE 1 END,
       now() - make_interval(secs => (i * 86400::bigint / %(tasks)s)),
       CASE WHEN s.status <> 'waiting' THEN now() - make_interval(secs => (i * 86400::bigint / %(tasks)s)) END,
       CASE WHEN s.status IN ('done', 'failed', 'cancelled') THEN now() END,
       now() + interval '7 days',
       now(),
       CASE WHEN s.status <> 'waiting' THEN 'bench-' || (i %% 4) END,
       CASE WHEN s.status = 'failed' THEN '{"message": "RuntimeError: boom"}'::jsonb END
FROM generate_series(1, %(tasks)s) AS i
CROSS JOIN LATERAL (SELECT CASE WHEN (i / 10) %% 20 < 14 THEN 'done' WHEN (i / 10) %% 20 < 16 THEN 'failed'
                                WHEN (i / 10) %% 20 = 16 THEN 'cancelled' WHEN (i / 10) %% 20 < 19 THEN 'waiting'
                                ELSE 'running' END AS status) s
"""
# name: (query strings it goes round)
LISTINGS: dict[str, list[str]] = {
    "status_type": [f"status={status}&type={kind}" for status, kind in itertools.product(STATUSES, TYPES)],
    "status": [f"status={status}" for status in STATUSES],
    "all": [""],
}


def page_ms(url: str) -> tuple[float, str | None]:
    """One request's time in ms, and the page's `next` cursor."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    page = json.loads(body)
    if response.status != 200 or not page["tasks"]:
        raise RuntimeError(f"GET {url} answered {response.status} with {len(page['tasks'])} tasks")
    return elapsed, page["next"]


def timed(base: str, queries: list[str], count: int) -> list[float]:
    """The times of `count` requests going round `queries`; every third follows the previous page's cursor."""
    times: list[float] = []
    cursors: dict[str, str | None] = {}
    for i, text in zip(range(count), itertools.cycle(queries), strict=False):
        cursor = cursors.get(text) if i % 3 == 2 else None
        url = f"{base}/task?{text}&limit=50" + (f"&cursor={cursor}" if cursor else "")
        elapsed, cursors[text] = page_ms(url)
        times.append(elapsed)
    return times


def measure(bench: Bench) -> Figures:
    tasks, samples = bench.sizes.listing_tasks, bench.sizes.listing_samples
    with bench.server.fresh_database() as url, Processes(bench.logdir, "listing") as procs:
        create_schema(url)
        conn = connect(url)
        try:
            started = time.monotonic()
            execute(conn, INSERT_TASKS, {"types": TYPES, "tasks": tasks})
            execute(conn, "VACUUM ANALYZE tasks")
            stored = time.monotonic() - started
            size_mb = scalar(conn, "SELECT pg_total_relation_size('tasks')") / 2**20
        finally:
            conn.close()

        port = free_port()
        env = server_env(url, PORT=str(port), GUNICORN_WORKERS="2", GUNICORN_THREADS="1")
        ours.start_gunicorn(procs, "web", ["app:app", "-c", "gunicorn.conf.py"], port, env)
        base = f"http://127.0.0.1:{port}"
        figures: Figures = {}
        for name, queries in LISTINGS.items():
            timed(base, queries, WARMUP)
            times = timed(base, queries, samples)
            figures[f"listing_{name}_p50"] = percentile(times, 0.5)
            figures[f"listing_{name}_p99"] = percentile(times, 0.99)
    print(
        f"  listing: {tasks:,} tasks stored in {stored:.0f} s ({size_mb:,.0f} MiB with indexes); page of 50, p50/p99:"
        f" status and type {figures['listing_status_type_p50']:.2f}/{figures['listing_status_type_p99']:.2f} ms,"
        f" status {figures['listing_status_p50']:.2f}/{figures['listing_status_p99']:.2f} ms,"
        f" no filter {figures['listing_all_p50']:.2f}/{figures['listing_all_p99']:.2f} ms",
        flush=True,
    )
    return figures
