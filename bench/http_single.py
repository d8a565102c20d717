"""(d) Single enqueue over HTTP: `wrk -t2 -c16` POSTing one no-op task per request to /task/new.

Against flask-tasks' web as it starts by default (gunicorn, 2 workers of 8 threads, each
request committing its task, PostgreSQL flushing concurrent commits together), the same
with 1 thread a worker (sync workers: what earlier rounds measured), and with
GROUP_COMMIT=true (a writer thread a worker storing every waiting task in one statement
and commit); against a bare Flask app under 2 sync gunicorn workers (bench/bare_app.py: parses the
body, stores nothing: the ceiling the target is set against), and the same bare app
under flask-tasks' own gunicorn settings (2 workers of 8 threads, which keep client
connections alive); against the bare app plus one plain INSERT with a durable commit
(the floor the database sets), and against the same INSERT group-committed (2 workers
of 8 threads, a writer thread per worker storing every waiting request's task in one
statement and one durable commit, with no validation). Requests/s of each, and wrk's
count of non-2xx answers for ours. Each server gets a 1 s warm-up first, and a timed run in
which one worker served all of wrk's connections is measured again (up to 3 times). The other
apps run under gunicorn's own defaults, not flask-tasks' gunicorn.conf.py. Also (h): the
peak RSS of a web worker (the larger of the two) after the run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from bench import ours as ours_web
from bench.context import Bench, Figures
from bench.cpu_split import cpu_times
from bench.pg import create_schema
from bench.procs import Processes, children, free_port, peak_rss_mb, server_env

LUA = Path(__file__).with_name("post_task.lua")
FIGURE_KEYS = (
    "http_single_ours",
    "http_single_ours_sync",
    "http_single_ours_group",
    "http_single_bare",
    "http_single_bare_threads",
    "http_single_bare_insert",
    "http_single_bare_group",
)
THREADS = ("--threads", "8")  # flask-tasks' default GUNICORN_THREADS
BALANCE_TRIES = 3
LOPSIDED = 0.9  # one worker used more than this share of the workers' CPU in a timed run


def wrk(port: int, seconds: int) -> dict[str, float]:
    """One wrk run; its summary: requests, duration_us, non2xx and socket errors."""
    command = ["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", str(LUA), f"http://127.0.0.1:{port}/task/new"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    for line in out.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line.removeprefix("BENCH "))
    raise RuntimeError(f"wrk printed no summary:\n{out}")


def requests_per_second(summary: dict[str, float]) -> float:
    return summary["requests"] / (summary["duration_us"] / 1e6)


def balanced_wrk(bench: Bench, name: str, workers: list[int], port: int) -> dict[str, float]:
    """wrk's summary of a timed run (after a 1 s warm-up) in which both workers served.

    wrk keeps its 16 connections open and a gthread worker keeps the connections it accepted: now and
    then one worker accepts them all while the other idles, and the figure falls to a third (seen with
    flask-tasks and bare Flask alike). Such a run is measured again, up to 3 times in all, with a note.
    """
    for attempt in range(1, BALANCE_TRIES + 1):
        wrk(port, 1)  # warm-up: both workers have their connection and code paths ready
        before = cpu_times(workers)
        summary = wrk(port, bench.sizes.wrk_seconds)
        used = [seconds - before.get(pid, 0.0) for pid, seconds in cpu_times(workers).items()]
        if max(used) <= LOPSIDED * sum(used):
            return summary
        kept = "kept" if attempt == BALANCE_TRIES else "measured again"
        bench.note(f"single enqueue over HTTP: {name}: one worker served all of wrk's connections; {kept}")
    return summary


def socket_errors(summary: dict[str, float]) -> float:
    return sum(summary[k] for k in ("connect", "read", "write", "timeout"))


def baseline(bench: Bench, name: str, app: str, options: tuple[str, ...] = ()) -> float | None:
    """Requests/s of bench/bare_app.py's `app` under 2 gunicorn workers (with a fresh database of
    its own); None, with a note, if any answer was not a 2xx or wrk saw socket errors."""
    port = free_port()
    with bench.server.fresh_database() as url, Processes(bench.logdir, f"http-{app}") as procs:
        create_schema(url)
        command = [f"bench.bare_app:{app}", *ours_web.PLAIN_CONFIG, "-w", "2", *options, "-b", f"127.0.0.1:{port}"]
        web = ours_web.start_gunicorn(procs, app, command, port, server_env(database_url="", BARE_DATABASE_URL=url))
        summary = balanced_wrk(bench, name, children(web.pid), port)
    if summary["non2xx"] or socket_errors(summary):
        bench.note(
            f"single enqueue over HTTP: {name} gave {summary['non2xx']:.0f} non-2xx answers and"
            f" {socket_errors(summary):.0f} socket errors; its figure is left out"
        )
        return None
    return requests_per_second(summary)


def measure(bench: Bench) -> Figures:
    if shutil.which("wrk") is None:
        bench.note("single enqueue over HTTP: not measured, wrk is not installed (bench/run installs it as root)")
        return dict.fromkeys(FIGURE_KEYS)
    figures: Figures = {}

    summary, figures["rss_web_worker_mb"] = ours(bench, "http-single")
    figures["http_single_ours"] = requests_per_second(summary)
    figures["http_single_non2xx"] = summary["non2xx"]
    errors = socket_errors(summary)
    if errors:
        bench.note(f"single enqueue over HTTP: wrk saw {errors:.0f} socket errors against flask-tasks")
    sync, _ = ours(bench, "http-single-sync", GUNICORN_THREADS="1")
    figures["http_single_ours_sync"] = requests_per_second(sync)
    group, _ = ours(bench, "http-single-group", GROUP_COMMIT="true")
    figures["http_single_ours_group"] = requests_per_second(group)

    figures["http_single_bare"] = baseline(bench, "bare", "app")
    figures["http_single_bare_threads"] = baseline(bench, "bare Flask, 8 threads a worker", "app", THREADS)
    figures["http_single_bare_insert"] = baseline(bench, "bare Flask + one INSERT", "insert_app")
    figures["http_single_bare_group"] = baseline(bench, "bare Flask + the INSERT group-committed", "group_app", THREADS)
    shown = {key: "—" if figures[key] is None else f"{figures[key]:,.0f}" for key in FIGURE_KEYS}
    print(
        f"  flask-tasks {shown['http_single_ours']} req/s ({summary['non2xx']:.0f} non-2xx),"
        f" with 1 thread a worker {shown['http_single_ours_sync']},"
        f" with GROUP_COMMIT=true {shown['http_single_ours_group']};"
        f" bare Flask {shown['http_single_bare']} req/s, with 8 threads a worker {shown['http_single_bare_threads']};"
        f" bare Flask + one INSERT {shown['http_single_bare_insert']} req/s;"
        f" the same group-committed {shown['http_single_bare_group']} req/s",
        flush=True,
    )
    return figures


def ours(bench: Bench, name: str, **env: str) -> tuple[dict[str, float], float]:
    """wrk's summary against flask-tasks' web (with these settings), and the peak RSS of its larger worker."""
    port = free_port()
    with bench.server.fresh_database() as url, Processes(bench.logdir, name) as procs:
        create_schema(url)
        web = ours_web.start_web(procs, url, port, **env)
        summary = balanced_wrk(bench, name, children(web.pid), port)
        rss = max(peak_rss_mb(pid) for pid in children(web.pid))
    return summary, rss
