"""(f) Janitor: rows/s deleted by one `python janitor.py` (JANITOR_INTERVAL=0.1, JANITOR_BATCH=10000).

With 2 idle handlers, first a drain of 20,000 no-op tasks alone (the rate
without the janitor). Then the janitor is started and, once it is connected, one
transaction inserts 500,000 rows already expired (status 'done', expire in the
past) and 20,000 new no-op tasks. From its commit, the janitor's time is until
no expired row is left, the handlers' until no task waits or runs: the drain
rate during the janitor's work shows whether it stalls them.
"""

from __future__ import annotations

import time

from bench import ours
from bench.context import Bench, Figures
from bench.pg import Connection, connect, create_schema, insert_noop_tasks, queue_is_empty, scalar
from bench.procs import Processes, wait_until

BACKENDS = "SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = current_database()"


def drain_seconds(conn: Connection, tasks: int) -> float:
    insert_noop_tasks(conn, tasks)
    committed = time.monotonic()
    wait_until(lambda: queue_is_empty(conn), 60 + tasks / 100, 0.02, "drain")
    return time.monotonic() - committed


def measure(bench: Bench) -> Figures:
    rows, tasks = bench.sizes.janitor_rows, bench.sizes.janitor_drain_tasks
    with bench.server.fresh_database() as url, Processes(bench.logdir, "janitor") as procs:
        create_schema(url)
        ours.start_handlers(procs, url, 2)
        conn = connect(url)
        try:
            without = tasks / drain_seconds(conn, tasks)

            before = set(scalar(conn, BACKENDS))
            janitor = ours.start_janitor(procs, url, JANITOR_INTERVAL="0.1", JANITOR_BATCH="10000")

            def janitor_connected() -> bool:
                janitor.check_alive()
                return bool(set(scalar(conn, BACKENDS)) - before)

            wait_until(janitor_connected, 30, 0.02, "the janitor connecting")

            with conn.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute(
                    "INSERT INTO tasks (type, args, status, expire) "
                    "SELECT 'noop', '{}', 'done', now() - interval '1 hour' FROM generate_series(1, %s)",
                    (rows,),
                )
                insert_noop_tasks(conn, tasks)
                cur.execute("COMMIT")
            committed = time.monotonic()

            ended: dict[str, float] = {}
            expired_left = "SELECT EXISTS (SELECT 1 FROM tasks WHERE expire < now())"

            def both_ended() -> bool:
                now = time.monotonic() - committed
                if "janitor" not in ended and not scalar(conn, expired_left):
                    ended["janitor"] = now
                if "drain" not in ended and queue_is_empty(conn):
                    ended["drain"] = now
                janitor.check_alive()
                return len(ended) == 2

            wait_until(both_ended, 60 + rows / 1000, 0.02, "the janitor and the drain")
            done = scalar(conn, "SELECT count(*) FROM tasks WHERE status = 'done'")
            if done != 2 * tasks:
                raise RuntimeError(f"expected {2 * tasks} done tasks left, found {done}")
        finally:
            conn.close()
    print(
        f"  janitor: {rows:,} rows in {ended['janitor']:.2f} s; drain of {tasks:,} tasks"
        f" {without:,.0f} tasks/s alone, {tasks / ended['drain']:,.0f} tasks/s with the janitor"
        f" (drain took {ended['drain']:.2f} s)",
        flush=True,
    )
    return {
        "janitor_rows_per_s": rows / ended["janitor"],
        "janitor_drain_without": without,
        "janitor_drain_during": tasks / ended["drain"],
        "janitor_seconds": ended["janitor"],
        "janitor_drain_seconds": ended["drain"],
    }
