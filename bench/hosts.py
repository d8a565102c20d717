"""(n) Hosts: 1, 2, 4 and 8 handlers drain 20,000 no-op tasks, on the host reaching PostgreSQL directly as every
other measurement does (the embedded server's Unix socket: the 0 ms baseline), and spread over 3 network namespaces
(test hosts made by tests/netlab.py, with veth links to the host) reaching it through netlab's delaying TCP proxy,
which adds 0, 2 or 10 ms to every round trip (this kernel has no netem).

The proxy is one asyncio process listening on the host end of each link. Over each drain, the CPU time of
PostgreSQL (postmaster and backends), of the handlers, of the proxy and of the machine is read from /proc, and the
handler logs give the round trips that wrote outcomes (one log record each), so the tasks per round trip: from
these, what limits each point, and the CPU each task cost, which other load on the machine hardly changes. In
each run every point is the median of 3 drains, the RTTs of one handler count taken in turn. The issue's target:
4 handlers at 10 ms reach at least half of their loopback rate. Where network namespaces cannot be made (no root,
no `ip`), the measurement is skipped and the report's notes say why.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench import ours
from bench.context import QUICK, Bench, Figures
from bench.drain import check_all_done, timeout_for
from bench.pg import Connection, connect, create_schema, done_tasks, insert_noop_tasks, queue_is_empty, scalar
from bench.procs import PYTHON, Process, Processes, children, server_env, wait_until
from tests import netlab

PREFIX, SUBNET, HOSTS = "ftb", "10.202", 3  # this bench's namespaces ftb-h1..3, links 10.202.{1,2,3}.0/24

# (figure key part, added round-trip ms or None for loopback without the proxy)
MODES: tuple[tuple[str, float | None], ...] = (("loop", None), ("proxy0", 0.0), ("2ms", 2.0), ("10ms", 10.0))
RTT_MS = dict(MODES)


@dataclass(frozen=True)
class HostSizes:
    tasks: int
    handler_counts: tuple[int, ...]
    modes: tuple[str, ...]


FULL_SIZES = HostSizes(20_000, (1, 2, 4, 8), ("loop", "proxy0", "2ms", "10ms"))
QUICK_SIZES = HostSizes(4_000, (4,), ("loop", "10ms"))  # a smoke test of the whole path, ratio included

# Rows for the report's raw table (bench/report.py METRICS: `*(Metric(*row) for row in hosts.METRICS)`).
LABELS = {"loop": "0 ms (loopback, no proxy)", "proxy0": "0 ms through the proxy", "2ms": "2 ms", "10ms": "10 ms"}
METRICS: list[tuple[str, str, int]] = [
    *(
        (f"hosts_{mode}_{n}", f"(n) hosts: {n} handler(s), RTT added {LABELS[mode]}, tasks/s", 0)
        for mode in FULL_SIZES.modes
        for n in FULL_SIZES.handler_counts
    ),
    *(
        (f"hosts_ratio_{mode}_{n}", f"(n) hosts: {n} handler(s), ratio {mode} / loopback", 2)
        for mode in ("2ms", "10ms")
        for n in FULL_SIZES.handler_counts
    ),
]

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
# The first line of each log record of outcomes a handler wrote (later lines of the record have no date).
RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO flask_tasks\.handler: handler \S+: task ", re.M)
TASK_LINE = re.compile(r"(?:^|: )handler \S+: task [0-9a-f-]{36} \(noop, attempt \d+\) ", re.M)


# -- CPU time from /proc ------------------------------------------------------------------------


def _ticks(pid: int, with_children: bool = False) -> int:
    """utime + stime of a process (+ cutime + cstime: its children that ended), in clock ticks; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    # after the command name: state ppid ... utime (field 14 of stat) is index 11 here
    used = int(fields[11]) + int(fields[12])
    return used + int(fields[13]) + int(fields[14]) if with_children else used


def _tree_ticks(pid: int) -> int:
    """CPU ticks of a process and its children, those running and those that ended."""
    return _ticks(pid, with_children=True) + sum(_ticks(child) for child in children(pid))


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user..steal; guest time is already inside user
    return total - idle, total


def postmaster_pid(conn: Connection) -> int | None:
    """The PostgreSQL server's postmaster (the parent of this connection's backend), if it runs on this machine."""
    backend = scalar(conn, "SELECT pg_backend_pid()")
    try:
        return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None  # another machine (BENCH_DATABASE_URL), or another pid namespace


class CpuMeter:
    """CPU time of PostgreSQL, the handlers, the proxy and the machine between start() and stop(), in cores."""

    def __init__(self, postmaster: int | None, handlers: list[int], proxy: int | None) -> None:
        self.postmaster, self.handlers, self.proxy = postmaster, handlers, proxy

    def _sample(self) -> dict[str, float]:
        busy, total = _machine_ticks()
        sample = {"machine": busy, "machine_total": total, "at": time.monotonic()}
        if self.postmaster is not None:
            sample["pg"] = _tree_ticks(self.postmaster)
        for i, pid in enumerate(self.handlers):
            sample[f"handler{i}"] = _tree_ticks(pid)
        if self.proxy is not None:
            sample["proxy"] = _tree_ticks(self.proxy)
        return sample

    def start(self) -> None:
        self.before = self._sample()

    def stop(self) -> dict[str, float | None]:
        """Cores used over the interval: pg, handlers (all), handler_max (the busiest), proxy, machine; its span."""
        after = self._sample()
        seconds = after["at"] - self.before["at"]

        def cores(key: str) -> float:
            return (after[key] - self.before[key]) / CLOCK_TICK / seconds

        handlers = [cores(f"handler{i}") for i in range(len(self.handlers))]
        machine_share = (after["machine"] - self.before["machine"]) / (
            after["machine_total"] - self.before["machine_total"]
        )
        return {
            "span": seconds,
            "pg": cores("pg") if "pg" in after else None,
            "handlers": sum(handlers),
            "handler_max": max(handlers),
            "proxy": cores("proxy") if "proxy" in after else None,
            "machine": machine_share * (os.cpu_count() or 1),
        }


# -- where each thread's time went, from /proc/<pid>/task/<tid>/schedstat --------------------------------


def _schedstat(pid: int, tid: int) -> tuple[int, int]:
    """(ns on a core, ns runnable but waiting for a core) of one thread; (0, 0) if gone."""
    try:
        run, wait, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return 0, 0
    return int(run), int(wait)


def _threads(pid: int) -> dict[int, tuple[int, int]]:
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return {}
    return {tid: _schedstat(pid, tid) for tid in tids}


class ThreadMeter:
    """Where the time of each handler's two busy threads, and of the PostgreSQL backend serving each, went
    between start() and stop(): on a core (run), waiting for a core (cpuwait: the machine's cores were
    taken), or asleep (idle: the main thread had no task; the database thread and the backend waited for
    each other, across the network)."""

    def __init__(self, handlers: list[int], backends: list[list[int]], proxy: int | None) -> None:
        self.handlers, self.backends = handlers, backends  # backends: the backend pids of each handler
        self.proxies = [[proxy]] if proxy is not None else []  # its event loop: its main thread

    def _sample(self) -> tuple[float, list[dict[int, tuple[int, int]]], list[dict[int, tuple[int, int]]]]:
        handlers = [_threads(pid) for pid in self.handlers]
        backends = [{pid: _schedstat(pid, pid) for pid in pids} for pids in self.backends + self.proxies]
        return time.monotonic(), handlers, backends

    def start(self) -> None:
        self.before = self._sample()

    def stop(self) -> dict[str, float | None]:
        """Shares of the interval: main_*, db_* and pgb_* (averaged over the handlers) and proxy_*, each
        run, cpuwait and idle."""
        at, handlers, backends = self._sample()
        span = (at - self.before[0]) * 1e9
        shares: dict[str, list[float]] = {}

        def add(prefix: str, run: int, wait: int) -> None:
            for name, value in (("run", run / span), ("cpuwait", wait / span), ("idle", 1 - (run + wait) / span)):
                shares.setdefault(f"{prefix}_{name}", []).append(max(0.0, value))

        for pid, before, after in zip(self.handlers, self.before[1], handlers, strict=True):
            deltas = {
                tid: (run - before.get(tid, (0, 0))[0], wait - before.get(tid, (0, 0))[1])
                for tid, (run, wait) in after.items()
            }
            main = deltas.pop(pid, (0, 0))
            add("main", *main)
            if deltas:  # the database thread: of the others (deliverer, watchdog...), the one that ran most
                add("db", *max(deltas.values()))
        for i, (before, after) in enumerate(zip(self.before[2], backends, strict=True)):
            deltas = [(run - before[pid][0], wait - before[pid][1]) for pid, (run, wait) in after.items()]
            if deltas:  # the handler's database thread's backend: the one that ran most
                add("pgb" if i < len(self.backends) else "proxy", *max(deltas))
        return {key: statistics.mean(values) for key, values in shares.items()}


def handler_backends(conn: Connection, count: int) -> list[list[int]]:
    """The backend pids of each handler's connections (WORKER_NAME bench-i), in this database."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT application_name, pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'flask-tasks handler bench-%'"
        )
        rows = cur.fetchall()
    return [[pid for name, pid in rows if name == f"flask-tasks handler bench-{i}"] for i in range(count)]


# -- round trips from the handler logs -------------------------------------------------------------


def round_trips(log: str) -> tuple[int, int, list[float]]:
    """In a handler's log: round trips that wrote outcomes (one record each), tasks written, and the
    seconds between one such round trip's end and the next."""
    ends = [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in RECORD.findall(log)]
    return len(ends), len(TASK_LINE.findall(log)), [b - a for a, b in zip(ends, ends[1:], strict=False)]


# -- one point ------------------------------------------------------------------------------------------


def start_handlers(
    procs: Processes, lab: netlab.Lab | None, proxy: netlab.Proxy | None, url: str, count: int
) -> list[Process]:
    """`count` handlers with default settings: on the host against `url`, or round-robin in the lab's
    namespaces against the proxy's address on their link; each waited for until it is ready."""
    started = []
    for i in range(count):
        if lab is None or proxy is None:
            command, handler_url = [PYTHON, "handler.py"], url
        else:
            host = lab.hosts[i % len(lab.hosts)]
            command, handler_url = lab.command(host, PYTHON, "handler.py"), proxy.url(url, lab.host_address(host))
        # The round trips are counted in their logs: one record of text lines per round trip.
        env = server_env(handler_url, WORKER_NAME=f"bench-{i}", LOG_LEVEL="INFO", LOG_FORMAT="text")
        started.append(procs.start(f"handler-{i}", command, env))
    for handler in started:
        handler.wait_for_output(ours.READY, timeout=60)
    return started


def drain_point(
    bench: Bench, tasks: int, count: int, mode: str, lab: netlab.Lab, proxy: netlab.Proxy
) -> dict[str, float | None]:
    """Tasks/s of `count` handlers in this mode, with what each part used meanwhile."""
    through_proxy = RTT_MS[mode] is not None
    if through_proxy:
        proxy.set_delay(RTT_MS[mode])
    with bench.server.fresh_database() as url, Processes(bench.logdir, f"hosts-{mode}-{count}") as procs:
        create_schema(url)
        handlers = start_handlers(procs, lab if through_proxy else None, proxy, url, count)
        conn = connect(url)
        try:
            meter = CpuMeter(
                postmaster_pid(conn),
                [h.pid for h in handlers],
                proxy.process.pid if through_proxy and proxy.process else None,
            )
            # A handler says it is ready before its database thread has connected (through the proxy, a few
            # round trips later): wait for every handler's backend, whose time ThreadMeter follows.
            backends = wait_until(
                lambda: (found := handler_backends(conn, count)) and all(found) and found,
                30,
                0.05,
                "every handler connected",
            )
            threads = ThreadMeter([h.pid for h in handlers], backends, meter.proxy)
            insert_noop_tasks(conn, tasks)
            committed = time.monotonic()
            meter.start()
            threads.start()
            wait_until(lambda: queue_is_empty(conn), timeout_for(tasks), 0.02, "all tasks done")
            elapsed = time.monotonic() - committed
            used = meter.stop()
            shares = threads.stop()
            check_all_done(done_tasks(conn), tasks)
        finally:
            conn.close()
        procs.stop_all()  # their last log lines are written
        trips, logged, gaps = 0, 0, []
        for handler in handlers:
            t, n, between = round_trips(handler.output())
            trips, logged, gaps = trips + t, logged + n, gaps + between
    if logged != tasks:  # a log line per task: the count of round trips would be wrong otherwise
        bench.note(f"hosts {mode}, {count} handler(s): the logs show {logged:,} tasks of {tasks:,}")
    return {
        "rate": tasks / elapsed,
        "seconds": elapsed,
        **{part: used[part] for part in ("pg", "handlers", "handler_max", "proxy", "machine")},
        # CPU time per task (µs): what the delay costs in work, whatever else the machine runs meanwhile
        **{
            f"{part}_us": None if used[part] is None else used[part] * used["span"] / tasks * 1e6
            for part in ("pg", "handlers", "proxy")
        },
        **shares,  # main_run, main_cpuwait, main_idle; db_*, pgb_*, proxy_* the same
        "trips": float(trips),
        "batch": tasks / trips if trips else None,
        "cycle_ms": statistics.median(gaps) * 1000 if gaps else None,  # from one round trip to the next
    }


# -- what limits a point ------------------------------------------------------------------------------------


def limit(figures: Figures, mode: str, count: int) -> str:
    """What limits this point, in a few words, read from its figures (one run's, or the medians)."""

    def get(part: str) -> float:
        return figures.get(f"hosts_{mode}_{count}_{part}") or 0.0

    cores = os.cpu_count() or 1
    if figures.get(f"hosts_{mode}_{count}_seconds") is None:
        return "not measured"
    ours = {"PostgreSQL": get("pg"), "handlers": get("handlers"), "proxy": get("proxy")}
    others = max(0.0, get("machine") - sum(ours.values()))  # the bench's probe, and the rest of the machine
    # Runnable but not running: a backend or a handler waiting for a core that others hold.
    if get("machine") >= 0.85 * cores and max(get("pgb_cpuwait"), get("main_cpuwait")) >= 0.2:
        top = max({**ours, "other processes": others}.items(), key=lambda item: item[1])[0]
        return (
            f"the {cores} cores: backends wait for a core {get('pgb_cpuwait'):.0%} of the time, handlers "
            f"{get('main_cpuwait'):.0%} (most CPU: {top}, {max(others, *ours.values()):.2f} cores)"
        )
    if get("pgb_run") + get("pgb_cpuwait") >= 0.7:
        busy = get("pgb_run") + get("pgb_cpuwait")
        return f"PostgreSQL: each handler's backend busy {busy:.0%} of the time (one statement at a time)"
    if get("main_run") + get("main_cpuwait") >= 0.7:
        return f"handler CPU: the main thread runs tasks {get('main_run'):.0%} of the time"
    if get("proxy_run") >= 0.7:
        return f"proxy CPU: its event loop runs {get('proxy_run'):.0%} of the time"
    return (
        f"round trips: backends idle {get('pgb_idle'):.0%}, handlers idle {get('main_idle'):.0%}, "
        f"waiting on each other (added delay: {waiting_share(figures, mode, count):.0%} of the drain)"
    )


def waiting_share(figures: Figures, mode: str, count: int) -> float:
    """The share of the drain a handler's database thread spent in added delay: round trips x RTT / time."""
    trips, seconds = figures.get(f"hosts_{mode}_{count}_trips"), figures.get(f"hosts_{mode}_{count}_seconds")
    if not trips or not seconds:
        return 0.0
    return trips / count * (RTT_MS[mode] or 0.0) / 1000 / seconds


def limits_table(figures: Figures, counts: tuple[int, ...], modes: tuple[str, ...]) -> str:
    """A markdown table of every point: tasks/s, round trips, CPU, where the time went, and what limits it."""
    cores = os.cpu_count() or 1
    lines = [
        "| RTT added | handlers | tasks/s | tasks per round trip | round trips per handler (added delay) "
        f"| CPU µs per task: PostgreSQL / handlers / proxy | cores busy of {cores}: ours / all "
        "| backend: run / wait for a core / idle | handler main thread: run / wait / idle | limit |",
        "|---|---:|---:|---:|---:|---|---|---|---|---|",
    ]

    def fmt(value: float | None, digits: int = 0) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    for mode in modes:
        for n in counts:
            key = f"hosts_{mode}_{n}"
            if figures.get(key) is None:
                continue

            def get(part: str, key: str = key) -> float | None:
                return figures.get(f"{key}_{part}")

            def shares(prefix: str) -> str:
                values = [get(f"{prefix}_{part}") for part in ("run", "cpuwait", "idle")]
                return " / ".join("—" if v is None else f"{v:.0%}" for v in values)

            ours = sum(get(part) or 0.0 for part in ("pg", "handlers", "proxy"))
            lines.append(
                f"| {LABELS[mode]} | {n} | {fmt(figures[key])} | {fmt(get('batch'))} "
                f"| {fmt((get('trips') or 0) / n)} ({waiting_share(figures, mode, n):.0%}) "
                f"| {' / '.join(fmt(get(f'{part}_us')) for part in ('pg', 'handlers', 'proxy'))} "
                f"| {ours:.2f} / {fmt(get('machine'), 2)} | {shares('pgb')} | {shares('main')} "
                f"| {limit(figures, mode, n)} |"
            )
    return "\n".join(lines)


def sizes_for(bench: Bench) -> HostSizes:
    return QUICK_SIZES if bench.sizes is QUICK else FULL_SIZES


def measure(bench: Bench) -> Figures:
    sizes = sizes_for(bench)
    reason = netlab.available(PREFIX)
    if reason is not None:
        bench.note(f"hosts skipped: {reason}")
        return {}
    figures: Figures = {}
    try:
        lab = netlab.Lab(PREFIX, SUBNET, HOSTS)
        lab.create()  # removes what it made if it fails; once made, the finally below closes it
    except (netlab.LabError, OSError) as err:
        bench.note(f"hosts skipped: the namespaces could not be made: {' '.join(str(err).split())[:200]}")
        return {}
    try:
        listen = [lab.host_address(i) for i in lab.hosts]
        with netlab.Proxy(listen, netlab.pg_target(bench.server.url), log=bench.logdir / "hosts-proxy.log") as proxy:
            # The modes of one handler count in turn, `repeats` times, loopback and 10 ms one after the
            # other: a burst of load from elsewhere on the machine then falls on both of a pair alike.
            order = sorted(sizes.modes, key=lambda mode: mode not in ("loop", "10ms"))
            for n in sizes.handler_counts:
                points: dict[str, list[dict[str, float | None]]] = {mode: [] for mode in sizes.modes}
                for _ in range(bench.sizes.repeats):
                    for mode in order:
                        points[mode].append(drain_point(bench, sizes.tasks, n, mode, lab, proxy))
                for mode, drains in points.items():
                    key = f"hosts_{mode}_{n}"
                    for part in drains[0]:
                        values = [d[part] for d in drains if d[part] is not None]
                        figures[key if part == "rate" else f"{key}_{part}"] = (
                            statistics.median(values) if values else None
                        )
                    rates = ", ".join(f"{d['rate']:,.0f}" for d in drains)
                    print(f"  {mode}, {n} handler(s): {rates} tasks/s; limit: {limit(figures, mode, n)}", flush=True)
                for mode in ("2ms", "10ms"):  # each the median of the ratios of drains made one after the other
                    if mode in points and "loop" in points:
                        ratios = [
                            d["rate"] / base["rate"] for d, base in zip(points[mode], points["loop"], strict=True)
                        ]
                        figures[f"hosts_ratio_{mode}_{n}"] = statistics.median(ratios)  # type: ignore[operator]
    finally:
        lab.close()
    if figures.get("hosts_ratio_10ms_4") is not None:
        print(f"  4 handlers at +10 ms / on loopback: {figures['hosts_ratio_10ms_4']:.2f} (target >= 0.5)", flush=True)
    return figures


def finish(median: Figures, out: Path, quick: bool) -> Path | None:
    """After the runs: the plot (out/hosts.png) and, printed, what limits each point (the medians)."""
    sizes = QUICK_SIZES if quick else FULL_SIZES
    if not any(median.get(f"hosts_{mode}_{n}") is not None for mode in sizes.modes for n in sizes.handler_counts):
        return None  # skipped, or failed
    from bench import plot  # matplotlib only when there is something to draw

    path = out / "hosts.png"
    plot.plot_hosts(median, sizes.handler_counts, path)
    print("\n(n) hosts, medians:\n" + limits_table(median, sizes.handler_counts, sizes.modes), flush=True)
    return path
