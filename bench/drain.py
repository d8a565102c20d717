"""(a) Drain: N idle handlers, then 30,000 no-op tasks in one statement; tasks/s from its commit until all are done.

The same for N PGQueuer workers and one bulk enqueue of 30,000 jobs. Handlers
run with their defaults (BATCH_SIZE=1000 at most, about 50 ms of work claimed
ahead) and the default LOG_LEVEL=INFO, their output going to a file. Completion
is polled every 20 ms by asking whether any task or job is left (queued or
running), which costs next to nothing; the count of done ones is checked once at
the end. In each run of the full bench, each figure is the median of 3 drains
(each side in turn, a fresh database each): one drain of 30,000 takes about a
second, and single drains of either side vary by a fifth. Then the same for 2
handlers and 2 workers at 100,000 tasks and jobs, a drain of a few seconds. Also
(h): the peak RSS of the single handler after its first drain.
"""

from __future__ import annotations

import statistics
import time

from bench import ours, pgq
from bench.context import Bench, Figures
from bench.pg import connect, create_schema, done_tasks, insert_noop_tasks, queue_is_empty
from bench.procs import Processes, peak_rss_mb, wait_until


def timeout_for(tasks: int) -> float:
    return 60 + tasks / 100  # fails below about 100 tasks/s


def check_all_done(done: int, expected: int) -> None:
    if done != expected:
        raise RuntimeError(f"the queue is empty but {done:,} of {expected:,} ended done")


def drain_ours(bench: Bench, handlers: int, tasks: int | None = None) -> tuple[float, float]:
    """Tasks/s of `handlers` handlers draining `tasks` (default: the drain size), and the peak RSS (MiB) of the
    first one."""
    tasks = tasks or bench.sizes.drain_tasks
    with bench.server.fresh_database() as url, Processes(bench.logdir, f"drain-ours-{handlers}") as procs:
        create_schema(url)
        started = ours.start_handlers(procs, url, handlers)
        conn = connect(url)
        try:
            insert_noop_tasks(conn, tasks)
            committed = time.monotonic()
            wait_until(lambda: queue_is_empty(conn), timeout_for(tasks), 0.02, "all tasks done")
            elapsed = time.monotonic() - committed
            check_all_done(done_tasks(conn), tasks)
        finally:
            conn.close()
        rss = peak_rss_mb(started[0].pid)  # just before stopping
    return tasks / elapsed, rss


def drain_pgqueuer(bench: Bench, workers: int, jobs: int | None = None) -> float:
    """Jobs/s of `workers` PGQueuer workers draining `jobs` (default: the drain size)."""
    jobs = jobs or bench.sizes.drain_tasks
    with bench.server.fresh_database() as url, Processes(bench.logdir, f"drain-pgq-{workers}") as procs:
        pgq.install(url)
        pgq.start_workers(procs, url, workers)
        conn = connect(url)
        try:
            committed, _ = pgq.enqueue_noop(url, jobs)
            wait_until(lambda: pgq.queue_is_empty(conn), timeout_for(jobs), 0.02, "all jobs done")
            elapsed = time.monotonic() - committed
            check_all_done(pgq.finished_jobs(conn), jobs)
        finally:
            conn.close()
    return jobs / elapsed


def measure(bench: Bench) -> Figures:
    figures: Figures = {}
    for n in bench.sizes.handler_counts:
        ours_rates, pgq_rates = [], []
        for _ in range(bench.sizes.repeats):
            rate, rss = drain_ours(bench, n)
            if n == 1 and not ours_rates:
                figures["rss_handler_mb"] = rss
            ours_rates.append(rate)
            pgq_rates.append(drain_pgqueuer(bench, n))
        figures[f"drain_ours_{n}"] = statistics.median(ours_rates)
        figures[f"drain_pgq_{n}"] = statistics.median(pgq_rates)
        print(
            f"  {n} handler(s): {', '.join(f'{r:,.0f}' for r in ours_rates)} tasks/s;"
            f" PGQueuer {', '.join(f'{r:,.0f}' for r in pgq_rates)} jobs/s",
            flush=True,
        )
    # The same for 2 handlers and 2 workers at a larger size: a drain that lasts a few seconds, so a
    # claim plan that degrades as the table grows, or a server's cost per row version, shows up.
    large = bench.sizes.drain_tasks_large
    ours_rates, pgq_rates = [], []
    for _ in range(bench.sizes.repeats):
        ours_rates.append(drain_ours(bench, 2, large)[0])
        pgq_rates.append(drain_pgqueuer(bench, 2, large))
    figures["drain_ours_2_large"] = statistics.median(ours_rates)
    figures["drain_pgq_2_large"] = statistics.median(pgq_rates)
    print(
        f"  2 handlers, {large:,} tasks: {', '.join(f'{r:,.0f}' for r in ours_rates)} tasks/s;"
        f" PGQueuer {', '.join(f'{r:,.0f}' for r in pgq_rates)} jobs/s",
        flush=True,
    )
    return figures
