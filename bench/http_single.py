"""(d) Single enqueue over HTTP: `wrk -t2 -c16` POSTing one no-op task per request to /task/new.

Against flask-tasks' web (gunicorn, 2 sync workers), against a bare Flask app
under the same gunicorn (bench/bare_app.py: parses the body, stores nothing),
against that bare app plus one plain INSERT with a durable commit (the floor the
database sets), and against the same INSERT group-committed (2 workers of 8
threads, a writer thread per worker storing every waiting request's task in one
statement and one durable commit: what batching could buy at best); requests/s of
each, and wrk's count of non-2xx answers for ours. Each server gets a 1 s warm-up
first. Also (h): the peak RSS of a web worker (the larger of the two) after the run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from bench import ours
from bench.context import Bench, Figures
from bench.pg import create_schema
from bench.procs import Processes, children, free_port, peak_rss_mb, server_env

LUA = Path(__file__).with_name("post_task.lua")
FIGURE_KEYS = ("http_single_ours", "http_single_bare", "http_single_bare_insert", "http_single_bare_group")


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


def measure(bench: Bench) -> Figures:
    if shutil.which("wrk") is None:
        bench.note("single enqueue over HTTP: not measured, wrk is not installed (bench/run installs it as root)")
        return dict.fromkeys(FIGURE_KEYS)
    seconds = bench.sizes.wrk_seconds
    figures: Figures = {}

    port = free_port()
    with bench.server.fresh_database() as url, Processes(bench.logdir, "http-single") as procs:
        create_schema(url)
        web = ours.start_web(procs, url, port)
        wrk(port, 1)  # warm-up: both workers have their connection and code paths ready
        summary = wrk(port, seconds)
        figures["rss_web_worker_mb"] = max(peak_rss_mb(pid) for pid in children(web.pid))
    figures["http_single_ours"] = requests_per_second(summary)
    figures["http_single_non2xx"] = summary["non2xx"]
    errors = sum(summary[k] for k in ("connect", "read", "write", "timeout"))
    if errors:
        bench.note(f"single enqueue over HTTP: wrk saw {errors:.0f} socket errors against flask-tasks")

    port = free_port()
    with Processes(bench.logdir, "http-bare") as procs:
        app = ["bench.bare_app:app", "-w", "2", "-b", f"127.0.0.1:{port}"]
        ours.start_gunicorn(procs, "bare", app, port, server_env(database_url=""))  # it uses no database
        wrk(port, 1)
        bare = wrk(port, seconds)
    figures["http_single_bare"] = requests_per_second(bare)

    port = free_port()
    with bench.server.fresh_database() as url, Processes(bench.logdir, "http-bare-insert") as procs:
        create_schema(url)
        app = ["bench.bare_app:insert_app", "-w", "2", "-b", f"127.0.0.1:{port}"]
        ours.start_gunicorn(procs, "bare-insert", app, port, server_env(database_url="", BARE_DATABASE_URL=url))
        wrk(port, 1)
        bare_insert = wrk(port, seconds)
    figures["http_single_bare_insert"] = requests_per_second(bare_insert)

    port = free_port()
    with bench.server.fresh_database() as url, Processes(bench.logdir, "http-bare-group") as procs:
        create_schema(url)
        app = ["bench.bare_app:group_app", "-w", "2", "--threads", "8", "-b", f"127.0.0.1:{port}"]
        ours.start_gunicorn(procs, "bare-group", app, port, server_env(database_url="", BARE_DATABASE_URL=url))
        wrk(port, 1)
        bare_group = wrk(port, seconds)
    figures["http_single_bare_group"] = requests_per_second(bare_group)
    print(
        f"  flask-tasks {figures['http_single_ours']:,.0f} req/s ({summary['non2xx']:.0f} non-2xx);"
        f" bare Flask {figures['http_single_bare']:,.0f} req/s;"
        f" bare Flask + one INSERT {figures['http_single_bare_insert']:,.0f} req/s;"
        f" the same group-committed {figures['http_single_bare_group']:,.0f} req/s",
        flush=True,
    )
    return figures
