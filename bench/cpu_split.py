"""Where a drain's CPU goes: `python -m bench.cpu_split [--tasks N] [--runs N] [--only ours|pgqueuer]`.

Not part of the report: a profiling aid. It runs the drain of bench/drain.py
(2 handlers against 2 PGQueuer workers, alternately, on an embedded PostgreSQL
or BENCH_DATABASE_URL) and reads from /proc the CPU time the workers and all
`postgres` processes used from the insert's commit to the end, per task. On a
2-core machine both sides are CPU-bound, so these two numbers say which side
of the wire a change has to make cheaper.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench import ours, pgq
from bench.drain import check_all_done
from bench.pg import Server, connect, create_schema, done_tasks, insert_noop_tasks, queue_is_empty
from bench.procs import Processes, wait_until

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (those that ended count as 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().startswith("postgres"):
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def drain(server: Server, logdir: Path, side: str, tasks: int) -> str:
    with server.fresh_database() as url, Processes(logdir, f"cpu-{side}") as procs:
        if side == "ours":
            create_schema(url)
            workers = ours.start_handlers(procs, url, 2)
        else:
            pgq.install(url)
            workers = pgq.start_workers(procs, url, 2)
        conn = connect(url)
        try:
            before = cpu_seconds([w.pid for w in workers]), cpu_seconds(postgres_pids())
            if side == "ours":
                insert_noop_tasks(conn, tasks)
                committed = time.monotonic()
                wait_until(lambda: queue_is_empty(conn), 60 + tasks / 100, 0.02, "all tasks done")
            else:
                committed, _ = pgq.enqueue_noop(url, tasks)
                wait_until(lambda: pgq.queue_is_empty(conn), 60 + tasks / 100, 0.02, "all jobs done")
            elapsed = time.monotonic() - committed
            used = cpu_seconds([w.pid for w in workers]) - before[0], cpu_seconds(postgres_pids()) - before[1]
            check_all_done(done_tasks(conn) if side == "ours" else pgq.finished_jobs(conn), tasks)
        finally:
            conn.close()
    return (
        f"{side:9} {tasks / elapsed:8,.0f} tasks/s in {elapsed:.2f} s; CPU per task: "
        f"workers {used[0] / tasks * 1e6:3.0f} µs, PostgreSQL {used[1] / tasks * 1e6:3.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_split", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["ours", "pgqueuer"])
    args = parser.parse_args()
    sides = [args.only] if args.only else ["ours", "pgqueuer"]
    server = Server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cpu-") as logdir:
            for run in range(1, args.runs + 1):
                for side in sides:
                    print(f"run {run}: {drain(server, Path(logdir), side, args.tasks)}", flush=True)
    finally:
        server.close()


if __name__ == "__main__":
    main()
