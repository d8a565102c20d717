"""Tasks for the dashboard's tests and its screenshot (TASKS_MODULE=tests.dashboard_tasks).

`crawl` reports its progress as it goes; `fail_once` fails on its first run and succeeds when run again
(an operator's retry); `hello` answers at once. The web process and the handlers load this module; the
test process itself never imports it, so its types stay out of the other tests' registry.
"""

import os
import random
import time

import psycopg2

from flask_tasks import current_task, task


def _db():
    # A connection per call (the task is rare), to the handler's database, where the tests' side_effects table is.
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    conn.autocommit = True
    return conn


@task
def hello(name: str = "world") -> str:
    """Answer at once."""
    return f"hello {name}"


@task(max_attempts=1)
def crawl(steps: int = 100, pause: float = 0.1) -> int:
    """Take `steps` steps of `pause` seconds, reporting the fraction done after each."""
    info = current_task()
    for i in range(steps):
        time.sleep(pause)
        if info is not None:
            info.progress((i + 1) / steps, f"page {i + 1} of {steps}")
    return steps


@task(max_attempts=1)
def fail_once(key: str) -> str:
    """Fail the first time it runs for `key`, succeed afterwards: a task an operator's retry mends."""
    conn = _db()
    try:
        with conn.cursor() as cur:
            insert = "INSERT INTO side_effects (key, pid) VALUES (%s, 0) ON CONFLICT DO NOTHING RETURNING key"
            cur.execute(insert, (key,))
            first = cur.fetchone() is not None
    finally:
        conn.close()
    if first:
        raise RuntimeError(f"the upstream service refused {key} (it will accept a retry)")
    return key


@task(max_attempts=2)
def flaky(fail_rate: float = 0.2, seconds: float = 0.05) -> str:
    """Work for about `seconds`, failing at random (for the screenshot's load)."""
    time.sleep(random.uniform(0.5, 1.5) * seconds)
    if random.random() < fail_rate:
        raise ValueError("the remote API answered 502 Bad Gateway")
    return "ok"
