"""Tasks for the tests: the shipped examples plus tasks with side effects and failures.

Handler processes under test load this module (TASKS_MODULE=tests.sidefx_tasks).
"""

import os
import signal

import psycopg2

from flask_tasks import task
from tasks import *  # noqa: F403  the shipped examples register themselves on import

_conn = None
_conn_pid = None


def _db():
    global _conn, _conn_pid
    if _conn is None or _conn_pid != os.getpid():
        _conn = psycopg2.connect(os.environ["DATABASE_URL"])
        _conn.autocommit = True
        _conn_pid = os.getpid()
    return _conn


@task
def record(key: str) -> str:
    """Insert one row keyed by `key`: a second run of the same task would fail on the unique key."""
    with _db().cursor() as cur:
        cur.execute("INSERT INTO side_effects (key, pid) VALUES (%s, %s)", (key, os.getpid()))
    return key


@task
def boom(message: str = "boom") -> None:
    """Raise an exception."""
    raise RuntimeError(message)


@task
def not_json() -> object:
    """Return something JSON cannot hold."""
    return {1, 2, 3}


@task
def nul_string() -> str:
    """Return a string PostgreSQL's jsonb refuses (it holds a NUL character)."""
    return "a\x00b"


@task
def kill_handler() -> None:
    """Kill the process running it, as a crashing native extension would."""
    os.kill(os.getpid(), signal.SIGKILL)
