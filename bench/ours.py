"""flask-tasks' own processes, started as a user would: `python handler.py`, `python janitor.py`, gunicorn."""

from __future__ import annotations

import urllib.error
import urllib.request

from bench.procs import PYTHON, Process, Processes, children, server_env, wait_until

READY = "ready for task types"  # what a handler logs once it is about to claim


def start_handlers(procs: Processes, database_url: str, count: int, **env: str) -> list[Process]:
    """`count` handlers with their default settings, each waited for until it logs that it is ready."""
    handlers = [
        procs.start("handler", [PYTHON, "handler.py"], server_env(database_url, WORKER_NAME=f"bench-{i}", **env))
        for i in range(count)
    ]
    for handler in handlers:
        handler.wait_for_output(READY)
    return handlers


def start_janitor(procs: Processes, database_url: str, **env: str) -> Process:
    return procs.start("janitor", [PYTHON, "janitor.py"], server_env(database_url, **env))


def start_gunicorn(procs: Processes, name: str, app: list[str], port: int, env: dict[str, str]) -> Process:
    """gunicorn serving `app` (its arguments) on `port`, waited for until both workers answer."""
    web = procs.start(name, [PYTHON, "-m", "gunicorn", *app], env)
    wait_http(web, f"http://127.0.0.1:{port}/")
    return web


# For an app other than flask-tasks: gunicorn's own defaults (see the file), given on the command line.
PLAIN_CONFIG = ("-c", "bench/plain_gunicorn.conf.py")


def start_web(procs: Processes, database_url: str, port: int, **env: str) -> Process:
    """flask-tasks' web: `gunicorn app:app -c gunicorn.conf.py` with 2 workers, each of GUNICORN_THREADS
    threads (the default, 8, unless `env` says otherwise)."""
    env = server_env(database_url, PORT=str(port), GUNICORN_WORKERS="2", **env)
    return start_gunicorn(procs, "web", ["app:app", "-c", "gunicorn.conf.py"], port, env)


def wait_http(process: Process, url: str, timeout: float = 30.0) -> None:
    """Wait until the server answers anything at all (a 404 will do) and has forked its 2 workers."""

    def answers() -> bool:
        process.check_alive()
        try:
            urllib.request.urlopen(url, timeout=2).close()
        except urllib.error.HTTPError:
            pass  # it answered
        except OSError:
            return False
        return True

    wait_until(answers, timeout, 0.05, f"{process.name} answering HTTP")
    wait_until(lambda: len(children(process.pid)) >= 2, timeout, 0.05, f"{process.name} forking 2 workers")
