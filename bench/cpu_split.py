"""Where a drain's CPU goes: `python -m bench.cpu_split [--tasks N] [--runs N] [--only ours|pgqueuer]`.

Not part of the report: a profiling aid. It runs the drain of bench/drain.py
(2 handlers against 2 PGQueuer workers, alternately, on an embedded PostgreSQL
or BENCH_DATABASE_URL) and reads from /proc the CPU time the workers and the
server's `postgres` processes used from the enqueue's commit until the queue is
empty, per task (the enqueue itself is left out on both sides). On a 2-core
machine both sides are CPU-bound, so these two numbers say which side of the
wire a change has to make cheaper. A process that ends inside that window (an
autovacuum worker, say) is left out: the figures are a little low, not high.
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


def cpu_times(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each of these processes so far (those that ended are left out)."""
    times = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        times[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return times


def used_since(before: dict[int, float], now: dict[int, float]) -> float:
    """CPU seconds used between two readings by the processes alive at the second."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in now.items())


def postgres_pids() -> list[int]:
    """The processes named postgres on this machine (the bench's server and any other)."""
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
            if side == "ours":
                insert_noop_tasks(conn, tasks)
                committed = time.monotonic()
            else:
                committed, _ = pgq.enqueue_noop(url, tasks)
            workers_before, server_before = cpu_times([w.pid for w in workers]), cpu_times(postgres_pids())
            empty = queue_is_empty if side == "ours" else pgq.queue_is_empty
            wait_until(lambda: empty(conn), 60 + tasks / 100, 0.02, "the queue emptied")
            elapsed = time.monotonic() - committed
            used = (
                used_since(workers_before, cpu_times([w.pid for w in workers])),
                used_since(server_before, cpu_times(postgres_pids())),
            )
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
