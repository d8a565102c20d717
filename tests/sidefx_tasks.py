"""Tasks for the tests: the shipped examples plus tasks with side effects and failures.

Handler processes under test load this module (TASKS_MODULE=tests.sidefx_tasks).
"""

import contextlib
import ctypes
import os
import signal
import time

import psycopg2

from flask_tasks import current_task, task
from tasks import *  # noqa: F403  the shipped examples register themselves on import

_conn = None
_conn_pid = None


def _db():
    global _conn, _conn_pid
    if _conn is None or _conn.closed or _conn_pid != os.getpid():  # a dropped connection: open another
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


@task(max_attempts=1)
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


@task(retry_backoff=0.05)
def flaky(key: str, failures: int) -> int:
    """Fail the first `failures` attempts, then succeed; each attempt is recorded."""
    info = current_task()
    with _db().cursor() as cur:
        cur.execute("INSERT INTO side_effects (key, pid) VALUES (%s, %s)", (f"{key}/{info.attempt}", os.getpid()))
    if info.attempt <= failures:
        raise ValueError(f"failure {info.attempt} of {failures}")
    return info.attempt


@task(timeout=0.3, max_attempts=1)
def slow(seconds: float) -> float:
    """Sleep longer than the type's 0.3 s timeout allows."""
    time.sleep(seconds)
    return seconds


@task(isolated=True, max_attempts=1)
def isolated_sleep(seconds: float) -> dict:
    """Sleep in a child process and report its pid."""
    time.sleep(seconds)
    return {"pid": os.getpid(), "parent": os.getppid()}


@task(isolated=True, max_attempts=1)
def segfault() -> None:
    """Dereference a null pointer."""
    ctypes.string_at(0)


@task(isolated=True, max_attempts=1)
def hard_exit(code: int) -> None:
    """Leave without a word."""
    os._exit(code)


@task(isolated=True, max_attempts=1, memory_limit_mb=300)
def eat_memory(megabytes: int) -> int:
    """Allocate more memory than the limit allows."""
    chunks = [bytearray(1024 * 1024) for _ in range(megabytes)]
    return len(chunks)


@task(isolated=True, max_attempts=1, timeout=0.5)
def spin() -> None:
    """Busy-loop forever: only killing the process stops it."""
    while True:
        pass


@task(max_attempts=1)
def chatter(megabytes: int) -> int:
    """Print megabytes to stdout."""
    line = "x" * 1023
    for _ in range(megabytes * 1024):
        print(line)
    return megabytes


@task
def effect(seconds: float) -> int:
    """Record (task id, attempt) as a side effect, then work for `seconds`."""
    info = current_task()
    with _db().cursor() as cur:
        cur.execute("INSERT INTO attempt_effects (task_id, attempt) VALUES (%s, %s)", (str(info.id), info.attempt))
    time.sleep(seconds)
    return info.attempt


@task(max_attempts=1)
def stubborn(seconds: float) -> str:
    """Swallow every exception while sleeping: only a repeated interrupt stops it."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(BaseException):
            time.sleep(0.01)
    return "finished"


@task(max_attempts=1)
def deep() -> list:
    """Return a list nested too deeply for JSON."""
    value: list = []
    for _ in range(100_000):
        value = [value]
    return value


@task(protected=True)
def classified(x: int) -> int:
    """A second protected type, for tokens that allow one protected type and not another."""
    return x


@task(max_attempts=3)
def big_result(size: int) -> str:
    """A result of `size` characters, for MAX_RESULT_BYTES."""
    return "x" * size


@task(max_attempts=1)
def huge_error(size: int) -> None:
    """Fails with a message of `size` characters, for the cap on stored error text."""
    raise ValueError("e" * size)


def _steps(steps: int, pause: float) -> int:
    for i in range(steps):
        current_task().progress((i + 1) / steps, f"step {i + 1} of {steps}")
        time.sleep(pause)
    return steps


@task(max_attempts=1)
def progress_steps(steps: int = 10, pause: float = 0.2) -> int:
    """Reports its progress after each of `steps` steps of `pause` seconds."""
    return _steps(steps, pause)


@task(isolated=True, max_attempts=1)
def progress_steps_isolated(steps: int = 10, pause: float = 0.2) -> int:
    """progress_steps in an isolated child: its reports reach the database through its handler."""
    return _steps(steps, pause)


@task(max_attempts=1)
def progress_flood(seconds: float = 2.0) -> int:
    """Reports progress as fast as it can for `seconds`; returns how many reports it made."""
    start, reports = time.monotonic(), 0
    while (elapsed := time.monotonic() - start) < seconds:
        current_task().progress(min(1.0, elapsed / seconds), f"report {reports}")
        reports += 1
    return reports


@task(max_attempts=1)
def bad_progress(fraction: float) -> str:
    """Reports a progress fraction that may be out of range; the task fails with the reason if so."""
    current_task().progress(fraction)
    return "reported"
