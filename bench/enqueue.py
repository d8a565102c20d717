"""(b) PGQueuer's in-process bulk enqueue, and (c) flask-tasks' bulk enqueue over HTTP, at the same concurrency.

(b): 2 asyncpg connections at once, each making several `Queries.enqueue` calls of
1,000 jobs in a row (lists of entrypoints, payloads, priorities); jobs/s. (c): gunicorn
with 2 workers; 2 client threads each POST /task/new several JSON arrays of 1,000 task
objects in a row and read each answer whole; tasks/s, with the default answer (every
task in full) and with `Prefer: return=minimal` (only the ids). Both sides store the same
number of tasks: 2 x 15 x 1,000 in the full bench, timed after WARM_UP untimed calls or
requests of 1,000 from each connection or client thread (a web worker's first requests open
its pool's connections; asyncpg's first call prepares its statement). The HTTP ones go on new
connections, which the two workers accept as the kernel hands them out: most runs warm both,
not every one. A server that refuses an array (a 400) is reported as not supporting it. In
each run of the full bench, each figure is the median of 3 measurements, each on a fresh
database: one takes under a second, and PGQueuer's alone varies by a fifth from one to the next.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.request

from bench import ours, pgq
from bench.context import Bench, Figures
from bench.pg import connect, create_schema, scalar
from bench.procs import Processes, free_port

CLIENT_THREADS = 2
WARM_UP = 2  # untimed calls or requests per connection or client thread, before the timed ones


def measure_pgq_bulk(bench: Bench) -> Figures:
    batches, batch = bench.sizes.http_bulk_requests, bench.sizes.HTTP_BATCH
    jobs = CLIENT_THREADS * batches * batch
    seconds = []
    for _ in range(bench.sizes.repeats):
        with bench.server.fresh_database() as url:
            pgq.install(url)
            seconds.append(pgq.enqueue_noop_batches(url, CLIENT_THREADS, batches, batch, WARM_UP))
    shown = ", ".join(f"{s:.3f}" for s in seconds)
    print(f"  PGQueuer: {jobs:,} jobs in calls of {batch:,} from {CLIENT_THREADS} connections in {shown} s", flush=True)
    return {"pgq_enqueue": jobs / statistics.median(seconds)}


def post(url: str, body: bytes, prefer: str | None = None) -> tuple[int, str]:
    """POST a JSON body; the status and the start of the answer (read whole, as a client would)."""
    headers = {"Content-Type": "application/json", **({"Prefer": prefer} if prefer else {})}
    request = urllib.request.Request(url, body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()[:200].decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read(200).decode(errors="replace")


def measure_http_bulk(bench: Bench) -> Figures:
    figures: Figures = {}
    for key, prefer in (("http_bulk", None), ("http_bulk_minimal", "return=minimal")):
        rates = []
        for _ in range(bench.sizes.repeats):
            rate = http_bulk_once(bench, prefer)
            if rate is None:
                break
            rates.append(rate)
        figures[key] = statistics.median(rates) if rates else None
    return figures


def http_bulk_once(bench: Bench, prefer: str | None) -> float | None:
    """Tasks/s of one measurement on a fresh database (with this Prefer header, if any); None if the
    server refuses arrays."""
    per_thread = bench.sizes.http_bulk_requests
    body = json.dumps([{"type": "noop", "args": {}}] * bench.sizes.HTTP_BATCH).encode()
    port = free_port()
    url = f"http://127.0.0.1:{port}/task/new"
    with bench.server.fresh_database() as db_url, Processes(bench.logdir, "http-bulk") as procs:
        create_schema(db_url)
        ours.start_web(procs, db_url, port)

        status, answer = post(url, body, prefer)  # untimed: does the server take an array at all?
        if status == 400:
            bench.note(f"bulk enqueue over HTTP: not supported (400: {answer.strip()})")
            return None
        if not 200 <= status < 300:
            raise RuntimeError(f"POST of an array answered {status}: {answer}")

        failures: list[str] = []

        def client(requests: int) -> None:
            for _ in range(requests):
                status, answer = post(url, body, prefer)
                if not 200 <= status < 300:
                    failures.append(f"{status}: {answer}")

        def clients(requests: int) -> float:
            """Seconds for CLIENT_THREADS threads at once to post `requests` arrays each."""
            threads = [threading.Thread(target=client, args=(requests,)) for _ in range(CLIENT_THREADS)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return time.monotonic() - started

        clients(WARM_UP)
        elapsed = clients(per_thread)
        if failures:
            raise RuntimeError(f"{len(failures)} bulk requests failed, e.g. {failures[0]}")

        tasks = CLIENT_THREADS * per_thread * bench.sizes.HTTP_BATCH
        untimed = (1 + CLIENT_THREADS * WARM_UP) * bench.sizes.HTTP_BATCH
        conn = connect(db_url)
        try:
            stored = scalar(conn, "SELECT count(*) FROM tasks")
        finally:
            conn.close()
        if stored != tasks + untimed:
            raise RuntimeError(f"{tasks + untimed} tasks posted but {stored} stored")
    how = f" (Prefer: {prefer})" if prefer else ""
    print(f"  {tasks:,} tasks in {CLIENT_THREADS * per_thread} requests{how} in {elapsed:.2f} s", flush=True)
    return tasks / elapsed
