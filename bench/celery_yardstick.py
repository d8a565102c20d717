"""(y) The yardstick: Flask + Celery 5.7.0 on Redis (broker and results), what flask-tasks' forerunners used.

bench/celery_app.py is the Celery app (Redis at BENCH_REDIS_URL, default
127.0.0.1:6379: broker in db 14, results in db 15, probes in db 13, all three
flushed before and after) and a Flask app whose POST /task/new calls the task's
`.delay()` and answers 201 with its id. Each Celery figure is set against
flask-tasks' own, measured in the same run. Single enqueue over HTTP: as (d),
gunicorn with 2 sync workers serving that Flask app (results on, so each
`.delay()` also subscribes to its result's channel, as Celery does with a Redis
backend), `wrk -t2 -c16` POSTing one no-op task per request, 1 s of warm-up,
then the timed run; no Celery worker runs, as no handler runs in (d);
flask-tasks' web is measured right before it. Drain: 2 Celery worker processes
drain 20,000 no-op tasks, against 2 handlers draining 20,000 (as (a)). The
workers are started, waited for until ready, and paused (SIGSTOP); the 20,000
are sent (one message each, by Celery's client) to the queue they consume; the
clock starts when they are resumed (SIGCONT), so it counts neither their
start-up nor the sending, and stops when all tasks are done, polled every 20 ms:
the results db's key count (DBSIZE) reaches 20,000, or, with results ignored, a
count each worker process keeps in memory and adds to a Redis key every 10 ms
(no round trip per task; up to 10 ms late). "Default" is one `celery worker -c
2`: what `celery worker` starts on 2 cores, a prefork pool of 2 child processes
running tasks plus the main process handing them messages, prefetch 4 per
child, results stored. "Best with acks" and "best" are the fastest of the
settings tried (bench/celery_yardstick.py's CANDIDATES: solo, prefork and
threads pools, results stored or ignored, prefetch 4, 64 or 256, late acks,
kombu's ack emulation on or off): 2 `celery worker --pool solo` processes, each
receiving and running its tasks itself, results ignored, prefetch multiplier 64,
rate limits off, no gossip, mingle or heartbeat; "best" also turns off kombu's
ack emulation (broker_transport_options ack_emulation=False): its two Redis
transactions per task (keep a copy of the message until the ack, then delete
it) are gone, and so is at-least-once delivery: a worker that dies loses the
tasks it had fetched, where flask-tasks runs them again once their lease runs
out. In each run of the full bench, each drain figure is the median of 3
drains, each side in turn.
Latency: one probe task every 20 ms to the best settings' 2 idle workers; the
probe stores time.time() when it starts, and the client subtracts time.time()
taken just before sending it (flask-tasks' (e) takes it after the insert's
commit); p50 and p99 in ms. Redis here keeps messages and results in memory only
(its persistence settings are in the notes), while PostgreSQL flushes every
commit to disk: a lost Redis loses every queued task.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import drain, http_single, latency, ours
from bench.context import FULL, QUICK, Bench, Figures
from bench.pg import connect, create_schema, scalar
from bench.procs import PYTHON, Process, Processes, children, free_port, server_env, wait_until

if TYPE_CHECKING:
    import redis
    from celery import Celery

FIGURE_KEYS = (
    "celery_http_single",
    "celery_http_single_ours",
    "celery_drain_default",
    "celery_drain_best_acked",
    "celery_drain_best",
    "celery_drain_ours",
    "celery_latency_p50",
    "celery_latency_p99",
)
DRAIN_QUEUE = "bench-drain"
PROBE_QUEUE = "bench-probe"
INTERVAL = latency.INTERVAL  # seconds between probes
NO_GOSSIP = ("--without-gossip", "--without-mingle", "--without-heartbeat")


@dataclass(frozen=True)
class Setup:
    """How the Celery workers of a drain run: `celery worker` processes, their options and settings."""

    name: str
    workers: int  # `celery worker` processes
    options: tuple[str, ...]  # their command-line options
    conf: dict[str, Any] = field(default_factory=dict)  # Celery settings (BENCH_CELERY_CONF)

    @property
    def results(self) -> bool:
        """Whether results are stored (else a counter tells when the drain is over)."""
        return not self.conf.get("task_ignore_result", False)

    @property
    def task(self) -> str:
        """The no-op task its drain sends: counted in memory when no result tells it ran."""
        return "noop" if self.results else "noop_counted"


FAST = {"worker_prefetch_multiplier": 64, "worker_disable_rate_limits": True}
IGNORED = {"task_ignore_result": True, **FAST}
# At most once: kombu's Redis transport then keeps no copy of a message it has handed to a worker,
# so the tasks a worker has fetched are lost if it dies (with it, they are delivered again).
NO_ACKS = {"broker_transport_options": {"ack_emulation": False}}
SOLO = ("--pool", "solo", *NO_GOSSIP)
DEFAULT = Setup("default: 1 worker, prefork -c 2", 1, ("-c", "2"))
BEST_ACKED = Setup("2 workers, solo pool, results ignored, prefetch 64", 2, SOLO, IGNORED)
BEST = Setup("2 workers, solo pool, results ignored, prefetch 64, no ack emulation", 2, SOLO, {**IGNORED, **NO_ACKS})
# The settings tried for "best" (python -m bench.celery_yardstick measures them in turn).
CANDIDATES = (
    DEFAULT,
    Setup("2 workers, solo pool", 2, ("--pool", "solo")),
    BEST_ACKED,
    Setup("1 worker, prefork -c 2, results ignored, prefetch 64", 1, ("-c", "2", *NO_GOSSIP), IGNORED),
    Setup(
        "1 worker, threads -c 2, results ignored, prefetch 64", 1, ("--pool", "threads", "-c", "2", *NO_GOSSIP), IGNORED
    ),
    Setup(
        "2 workers, solo pool, results ignored, prefetch 64, late acks", 2, SOLO, {**IGNORED, "task_acks_late": True}
    ),
    Setup(
        "2 workers, solo pool, results ignored, prefetch 256", 2, SOLO, {**IGNORED, "worker_prefetch_multiplier": 256}
    ),
    BEST,
    Setup("2 workers, solo pool, results stored, prefetch 64, no ack emulation", 2, SOLO, {**FAST, **NO_ACKS}),
    Setup(
        "1 worker, prefork -c 2, results ignored, prefetch 64, no ack emulation",
        1,
        ("-c", "2", *NO_GOSSIP),
        {**IGNORED, **NO_ACKS},
    ),
    Setup(
        "1 worker, threads -c 2, results ignored, prefetch 64, no ack emulation",
        1,
        ("--pool", "threads", "-c", "2", *NO_GOSSIP),
        {**IGNORED, **NO_ACKS},
    ),
)


def celery_available(bench: Bench) -> bool:
    """Whether celery imports and Redis answers; if not, a note says why."""
    try:
        import redis

        from bench import celery_app
    except ImportError as err:
        bench.note(f"(y) Celery yardstick: not measured, {err} (bench/requirements.txt installs celery[redis])")
        return False
    try:
        client = redis.Redis.from_url(celery_app.redis_url(celery_app.BROKER_DB), socket_connect_timeout=2)
        client.ping()
        save, appendonly = client.config_get("save")["save"], client.config_get("appendonly")["appendonly"]
        version = client.info("server")["redis_version"]
        client.close()
    except (redis.RedisError, OSError) as err:
        bench.note(f"(y) Celery yardstick: not measured, Redis at {celery_app.REDIS_URL} does not answer ({err})")
        return False
    conn = connect(bench.server.url)
    try:
        fsync, synchronous = scalar(conn, "SHOW fsync"), scalar(conn, "SHOW synchronous_commit")
    finally:
        conn.close()
    bench.note(
        f"(y) Redis {version} at {celery_app.REDIS_URL} runs with save '{save}' and appendonly {appendonly}:"
        " Celery's messages and results are kept in memory only"
        f"{', never written to disk' if not save and appendonly == 'no' else ''}, while PostgreSQL"
        f" (fsync {fsync}, synchronous_commit {synchronous}) flushes every commit of flask-tasks to disk"
    )
    return True


def redis_db(db: int) -> redis.Redis:
    """A client of one of the bench's Redis dbs."""
    import redis

    from bench import celery_app

    return redis.Redis.from_url(celery_app.redis_url(db))


def flush_redis() -> None:
    """Empty the bench's three Redis dbs (broker, results, probes)."""
    from bench import celery_app

    for db in (celery_app.BROKER_DB, celery_app.BACKEND_DB, celery_app.PROBE_DB):
        client = redis_db(db)
        try:
            client.flushdb()
        finally:
            client.close()


def node_name(i: int) -> str:
    """The i-th worker's Celery node name."""
    return f"bench{i}@{socket.gethostname()}"


def start_workers(procs: Processes, setup: Setup, queue: str) -> list[Process]:
    """`setup`'s workers, consuming `queue`, each waited for until ready."""
    from bench.celery_app import READY

    env = server_env("", BENCH_CELERY_CONF=json.dumps(setup.conf))
    workers: list[Process] = []
    for i in range(setup.workers):
        command = [PYTHON, "-m", "celery", "-A", "bench.celery_app", "worker", "-n", node_name(i), "-Q", queue]
        workers.append(procs.start(f"celery-{i}", [*command, *setup.options], env))
    for worker in workers:
        worker.wait_for_output(READY, timeout=60)
    return workers


def signal_all(workers: list[Process], signum: int) -> None:
    """Send `signum` to each worker's process group (its pool's children too)."""
    for worker in workers:
        os.killpg(worker.pid, signum)


def check_worker_logs(procs: Processes) -> None:
    """Fail if a worker logged an error (a task that failed would still count as done)."""
    for process in procs.started:
        if "ERROR/" in process.output():
            raise RuntimeError(f"{process.name} logged an error:\n{process.tail()}")


def send_tasks(client: Celery, task: str, count: int, queue: str) -> None:
    """`count` tasks, one message each, on one producer."""
    with client.producer_or_acquire() as producer:
        for _ in range(count):
            client.send_task(task, queue=queue, producer=producer)


def cpu_seconds(workers: list[Process]) -> float:
    """User + system CPU the workers and their pools' children have used so far."""
    total = 0
    for pid in [w.pid for w in workers] + [c for w in workers for c in children(w.pid)]:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(client: redis.Redis) -> float:
    """User + system CPU the Redis server has used so far."""
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


@dataclass(frozen=True)
class Drained:
    rate: float  # tasks/s
    worker_cpu_us: float  # the workers' CPU per task, µs
    redis_cpu_us: float  # Redis's CPU per task, µs (all of Redis's, whoever else uses it)


def drain_celery(bench: Bench, setup: Setup, tasks: int) -> Drained:
    """How fast `setup`'s workers drain `tasks` no-op tasks queued while they were paused, and the CPU it takes."""
    from bench import celery_app

    flush_redis()
    dbs = (celery_app.BROKER_DB, celery_app.BACKEND_DB, celery_app.PROBE_DB)
    broker, results, counter = (redis_db(db) for db in dbs)
    client = celery_app.make_app(results=False)  # sends only: no result subscriptions in this process

    def done() -> int:
        return results.dbsize() if setup.results else int(counter.get(celery_app.COUNTER_KEY) or 0)

    try:
        with Processes(bench.logdir, "celery-drain") as procs:
            workers = start_workers(procs, setup, DRAIN_QUEUE)
            signal_all(workers, signal.SIGSTOP)
            try:
                send_tasks(client, setup.task, tasks, DRAIN_QUEUE)
                queued = broker.llen(DRAIN_QUEUE)
                if queued < tasks - setup.workers:  # a paused worker's pending BRPOP may hold one
                    raise RuntimeError(f"{queued:,} of {tasks:,} tasks are queued")
            finally:
                cpu, redis_cpu = cpu_seconds(workers), redis_cpu_seconds(broker)
                resumed = time.monotonic()
                signal_all(workers, signal.SIGCONT)
            wait_until(lambda: done() >= tasks, drain.timeout_for(tasks), 0.02, "all Celery tasks done")
            elapsed = time.monotonic() - resumed
            cpu, redis_cpu = cpu_seconds(workers) - cpu, redis_cpu_seconds(broker) - redis_cpu
            drain.check_all_done(done(), tasks)
            check_worker_logs(procs)
    finally:
        client.close()
        for conn in (broker, results, counter):
            conn.close()
        flush_redis()
    return Drained(tasks / elapsed, cpu / tasks * 1e6, redis_cpu / tasks * 1e6)


def latency_celery(bench: Bench, setup: Setup, samples: int) -> list[float]:
    """Latencies in ms of `samples` probe tasks sent one every 20 ms to `setup`'s idle workers."""
    from bench import celery_app

    flush_redis()
    probes = redis_db(celery_app.PROBE_DB)
    try:
        with Processes(bench.logdir, "celery-latency") as procs:
            start_workers(procs, setup, PROBE_QUEUE)
            sent: list[float] = []
            ignore = None if setup.results else True  # as the probe task's own `.delay()` would
            with celery_app.app.producer_or_acquire() as producer:
                start = time.monotonic()
                for i in range(samples):
                    sent.append(time.time())
                    celery_app.app.send_task(
                        "probe", args=(i,), queue=PROBE_QUEUE, producer=producer, ignore_result=ignore
                    )
                    time.sleep(max(0.0, start + (i + 1) * INTERVAL - time.monotonic()))
            key = celery_app.PROBE_KEY
            wait_until(lambda: probes.hlen(key) >= samples, latency.WAIT, 0.02, "all probes run")
            check_worker_logs(procs)
            started = probes.hgetall(key)
    finally:
        probes.close()
        flush_redis()
    return [(float(started[str(i).encode()]) - sent[i]) * 1000 for i in range(samples)]


def http_celery(bench: Bench) -> float | None:
    """Requests/s of the Flask app enqueuing with `.delay()` under 2 gunicorn workers; None, with a note,
    if any answer was not a 2xx or wrk saw socket errors."""
    flush_redis()
    port = free_port()
    try:
        with Processes(bench.logdir, "celery-http") as procs:
            command = ["bench.celery_app:web", *ours.PLAIN_CONFIG, "-w", "2", "-b", f"127.0.0.1:{port}"]
            ours.start_gunicorn(procs, "celery-web", command, port, server_env(""))
            http_single.wrk(port, 1)
            summary = http_single.wrk(port, bench.sizes.wrk_seconds)
    finally:
        flush_redis()
    errors = http_single.socket_errors(summary)
    if summary["non2xx"] or errors:
        bench.note(
            f"(y) single enqueue, Flask + Celery: {summary['non2xx']:.0f} non-2xx answers and"
            f" {errors:.0f} socket errors; its figure is left out"
        )
        return None
    return http_single.requests_per_second(summary)


def http_ours(bench: Bench) -> float:
    """Requests/s of flask-tasks' web (2 sync workers), as (d) measures it."""
    port = free_port()
    with bench.server.fresh_database() as url, Processes(bench.logdir, "celery-http-ours") as procs:
        create_schema(url)
        ours.start_web(procs, url, port)
        http_single.wrk(port, 1)
        summary = http_single.wrk(port, bench.sizes.wrk_seconds)
    if summary["non2xx"] or http_single.socket_errors(summary):
        bench.note(f"(y) single enqueue, flask-tasks: {summary['non2xx']:.0f} non-2xx answers or socket errors")
    return http_single.requests_per_second(summary)


def measure(bench: Bench) -> Figures:
    """The yardstick's figures, each Celery one beside flask-tasks' own; all None, with a note, without
    celery or Redis."""
    figures: Figures = dict.fromkeys(FIGURE_KEYS)
    if not celery_available(bench):
        return figures
    tasks = bench.sizes.celery_tasks

    if shutil.which("wrk") is None:
        bench.note("(y) single enqueue: not measured, wrk is not installed")
    else:
        figures["celery_http_single_ours"] = http_ours(bench)
        figures["celery_http_single"] = http_celery(bench)

    rates: dict[str, list[float]] = {"ours": [], "default": [], "best_acked": [], "best": []}
    for _ in range(bench.sizes.repeats):
        rates["ours"].append(drain.drain_ours(bench, 2, tasks=tasks)[0])
        rates["default"].append(drain_celery(bench, DEFAULT, tasks).rate)
        rates["best_acked"].append(drain_celery(bench, BEST_ACKED, tasks).rate)
        rates["best"].append(drain_celery(bench, BEST, tasks).rate)
    for side, values in rates.items():
        figures[f"celery_drain_{side}"] = statistics.median(values)

    figures.update(latency.summary("celery_latency", latency_celery(bench, BEST, bench.sizes.latency_samples)))
    shown = {key: "—" if figures[key] is None else f"{figures[key]:,.0f}" for key in FIGURE_KEYS}
    print(
        f"  single enqueue: flask-tasks {shown['celery_http_single_ours']} req/s,"
        f" Flask + Celery {shown['celery_http_single']} req/s;"
        f" drain of {tasks:,}: flask-tasks {', '.join(f'{r:,.0f}' for r in rates['ours'])},"
        f" Celery default {', '.join(f'{r:,.0f}' for r in rates['default'])},"
        f" best with acks {', '.join(f'{r:,.0f}' for r in rates['best_acked'])},"
        f" best {', '.join(f'{r:,.0f}' for r in rates['best'])} tasks/s;"
        f" latency p50 {figures['celery_latency_p50']:.2f} ms, p99 {figures['celery_latency_p99']:.2f} ms",
        flush=True,
    )
    return figures


def explore(argv: list[str] | None = None) -> None:
    """Drain with every candidate setting in turn, `--rounds` times, and print each one's rates."""
    parser = argparse.ArgumentParser(prog="python -m bench.celery_yardstick", description=explore.__doc__)
    parser.add_argument("--tasks", type=int, default=FULL.celery_tasks)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", help="comma-separated indexes into CANDIDATES")
    args = parser.parse_args(argv)
    chosen = [CANDIDATES[int(i)] for i in args.only.split(",")] if args.only else list(CANDIDATES)
    bench = Bench(QUICK, None, Path(tempfile.mkdtemp(prefix="celery-explore-")))  # type: ignore[arg-type]
    runs: dict[str, list[Drained]] = {setup.name: [] for setup in chosen}
    for round_ in range(args.rounds):
        for setup in chosen:
            drained = drain_celery(bench, setup, args.tasks)
            runs[setup.name].append(drained)
            print(
                f"round {round_ + 1}: {setup.name}: {drained.rate:,.0f} tasks/s, CPU per task:"
                f" workers {drained.worker_cpu_us:,.0f} µs, Redis {drained.redis_cpu_us:,.0f} µs",
                flush=True,
            )
    print("median tasks/s (each round's), median CPU µs per task of the workers and of Redis:")
    for name, drains in runs.items():
        rates = ", ".join(f"{d.rate:,.0f}" for d in drains)
        worker_cpu = statistics.median(d.worker_cpu_us for d in drains)
        redis_cpu = statistics.median(d.redis_cpu_us for d in drains)
        rate = statistics.median(d.rate for d in drains)
        print(f"{rate:8,.0f} ({rates})  workers {worker_cpu:5,.0f} µs  Redis {redis_cpu:4,.0f} µs  {name}")
    shutil.rmtree(bench.logdir, ignore_errors=True)


if __name__ == "__main__":
    explore()
