"""The server behind Debian's PgBouncer in transaction mode, in its stock configuration (tests/pgbouncer.py).

A stock PgBouncer refuses the `options` startup parameter that carries each connection's
settings; the server then connects without it and sends the settings with SET LOCAL in
front of each statement (db.SetLocalConnection). These tests check that it runs, that
the settings still hold, and that they hold for nobody else.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import pytest

from flask_tasks import db
from flask_tasks.config import Settings
from flask_tasks.handler import Handler
from tests.conftest import enqueue_many, query, wait_for
from tests.helpers import free_port, http, start_web
from tests.pgbouncer import SETTINGS, PgBouncer, running_pgbouncer

REFUSED = "refused the `options` startup parameter"  # what each process logs once it connects without


@pytest.fixture
def pgbouncer(server_url: str, database_url: str) -> Iterator[PgBouncer]:
    # After database_url: stopped before the test's database is dropped.
    with running_pgbouncer(server_url) as bouncer:
        yield bouncer


@pytest.fixture
def bouncer_url(pgbouncer: PgBouncer, database_url: str) -> str:
    """The test's database, through PgBouncer."""
    return pgbouncer.url(database_url)


@pytest.fixture
def bouncer_settings(settings: Settings, bouncer_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a process whose DATABASE_URL goes through PgBouncer (PREPARE_STATEMENTS, LISTEN_NOTIFY left true)."""
    monkeypatch.setattr(db, "_resolved_url", None)
    return dataclasses.replace(settings, database_url=bouncer_url)


def test_a_stock_pgbouncer_refuses_the_options_startup_parameter(bouncer_url):
    # What every process met before: the reason for the fallback, and the proof that this one is stock.
    with pytest.raises(psycopg2.OperationalError, match="unsupported startup parameter: options"):
        psycopg2.connect(bouncer_url, options="-c statement_timeout=60000")


def settings_of(conn: psycopg2.extensions.connection) -> tuple[str, ...]:
    names = ("statement_timeout", "lock_timeout", "enable_seqscan", "enable_bitmapscan")
    return query(conn, "SELECT " + ", ".join(f"current_setting('{name}')" for name in names))[0]


def test_the_settings_hold_through_pgbouncer_and_leak_to_nobody(database_url, bouncer_url, bouncer_settings, registry):
    plain = psycopg2.connect(database_url)  # the server's own defaults, for comparison
    plain.autocommit = True
    defaults = settings_of(plain)

    # A handler's connection, opened as the handler opens it.
    handler = Handler(bouncer_settings, registry)
    conn = handler._db()
    assert isinstance(conn, db.SetLocalConnection)
    assert not isinstance(conn, db.PreparingConnection)  # PREPARE does not survive transaction pooling
    assert settings_of(conn) == ("1min", "10s", "off", "off")
    # In an explicit transaction too, and the last statement's rows come back.
    with conn:
        assert settings_of(conn) == ("1min", "10s", "off", "off")
        assert query(conn, "SELECT generate_series(1, 3)") == [(1,), (2,), (3,)]
    # The web's and the janitor's: without the planner settings.
    other = db.connect(bouncer_url, "flask-tasks test")
    assert settings_of(other)[:2] == ("1min", "10s") and settings_of(other)[2:] == defaults[2:]

    # Nothing stays on PgBouncer's server connections: a client that sets nothing sees the defaults.
    bare = psycopg2.connect(bouncer_url)
    bare.autocommit = True
    for _ in range(5):
        assert settings_of(bare) == defaults
    # VACUUM cannot run in a transaction: it goes without the SET LOCALs (the janitor runs it).
    assert db.run(conn, "vacuum_tasks") == []
    for c in (plain, conn, other, bare):
        c.close()


def test_the_settings_hold_when_pgbouncer_is_told_to_ignore_them(server_url, database_url):
    # `ignore_startup_parameters = options` lets the connection in and drops the settings silently:
    # the process notices (statement_timeout not set by the client) and sends them with SET LOCAL.
    with running_pgbouncer(server_url, ignore_startup_parameters="options") as bouncer:
        conn = db.connect(bouncer.url(database_url), "flask-tasks test", options=db.HANDLER_OPTIONS)
        assert isinstance(conn, db.SetLocalConnection)
        assert settings_of(conn) == ("1min", "10s", "off", "off")
        conn.close()


def test_direct_connections_keep_their_startup_settings_and_prepare(app, settings):
    # The fallback is remembered per URL: the web's pool straight to PostgreSQL is as before.
    from flask_tasks.web.pool import EXTENSION

    with app.app_context():
        conn = app.extensions[EXTENSION].get()
        assert isinstance(conn, db.PreparingConnection) and not isinstance(conn, db.SetLocalConnection)
        assert "statement_timeout=60000" in conn.get_dsn_parameters()["options"]
        assert settings_of(conn)[:2] == ("1min", "10s")
        app.extensions[EXTENSION].put(conn, broken=False)


def test_a_statement_times_out_through_pgbouncer(bouncer_url):
    conn = db.connect(bouncer_url, "flask-tasks test", options=" -c statement_timeout=300")
    started = time.monotonic()
    with pytest.raises(psycopg2.errors.QueryCanceled):
        query(conn, "SELECT pg_sleep(5)")
    assert time.monotonic() - started < 4  # 0.3 s, with a wide margin for a loaded machine
    assert query(conn, "SELECT 1") == [(1,)]  # the connection is fine afterwards
    conn.close()


def test_the_claim_keeps_to_the_indexes_through_pgbouncer(conn, bouncer_settings, registry):
    # The planner settings matter most right after a burst into a table autovacuum has not analyzed
    # yet (see db.HANDLER_OPTIONS): without them, this claim fetches the waiting tasks otherwise.
    handler = Handler(bouncer_settings, registry)
    enqueue_many(conn, "record", [{"key": str(i)} for i in range(5000)])
    params = {"outcomes": "[]", "keep": 60, "worker": "w", "lease": 30, "types": ["record"], "batch": 1000}
    plan = "\n".join(line for (line,) in query(handler._db(), "EXPLAIN " + db.QUERIES["store_and_claim"], params))
    assert "Seq Scan on tasks" not in plan and "Bitmap" not in plan, plan
    assert "Index Scan using tasks_claim_idx" in plan, plan
    handler.db.drop()


def test_web_handlers_and_janitor_through_pgbouncer(processes, pgbouncer, bouncer_url, conn):
    """End to end over HTTP: gunicorn, two handlers and the janitor, each connected through PgBouncer."""
    env = {"DATABASE_URL": bouncer_url, **SETTINGS, "MAX_TASK_TIME": "4", "JANITOR_INTERVAL": "0.5"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = start_web(processes, port, {**env, "GUNICORN_WORKERS": "2"})
    handlers = [processes.start("handler.py", **env) for _ in range(2)]
    janitor = processes.start("janitor.py", **env)

    status, created = http("POST", f"{base}/task", {"type": "add", "args": {"x": 1, "y": 2}})
    assert status == 201 and created["status"] == "waiting"
    status, bulk = http("POST", f"{base}/task", [{"type": "add", "args": {"x": i, "y": 1}} for i in range(200)])
    assert status == 201 and len(bulk) == 200
    done = wait_for(lambda: (r := http("GET", f"{base}/task/{created['id']}")[1])["status"] == "done" and r)
    assert done["result"] == 3
    for task in bulk[::40]:
        answer = wait_for(lambda t=task: (r := http("GET", f"{base}/task/{t['id']}")[1])["status"] == "done" and r)
        assert answer["result"] == task["args"]["x"] + 1
    wait_for(lambda: query(conn, "SELECT count(*) FROM tasks WHERE status <> 'done'")[0][0] == 0)
    # After MAX_TASK_TIME the janitor deletes them, through PgBouncer as well.
    wait_for(lambda: http("GET", f"{base}/task/{created['id']}")[0] == 404, timeout=30)

    processes.stop_all()
    for proc in (web, *handlers, janitor):
        output = processes.output(proc)
        assert REFUSED in output, output  # it did connect through PgBouncer, and fell back
        assert "Traceback" not in output and "database error" not in output, output
    assert "expired tasks" in processes.output(janitor) and "vacuum failed" not in processes.output(janitor)
    assert "unsupported startup parameter" in pgbouncer.output()


def test_handlers_with_the_default_settings_work_through_pgbouncer(processes, pgbouncer, bouncer_url, conn):
    # PREPARE_STATEMENTS and LISTEN_NOTIFY left true: the fallback turns both off. A PREPAREd statement
    # would meet another client's ("already exists") or miss its own ("does not exist"); a LISTEN would
    # stay on a server connection, whose notifications PgBouncer then drops with a warning each.
    enqueue_many(conn, "add", [{"x": i, "y": 1} for i in range(2000)])
    handlers = [processes.start("handler.py", DATABASE_URL=bouncer_url, BATCH_SIZE="20") for _ in range(3)]
    wait_for(lambda: query(conn, "SELECT count(*) FROM tasks WHERE status = 'done'")[0][0] == 2000, timeout=120)
    # A task enqueued now is announced (NOTIFY) to whoever listens: nobody must.
    query(
        conn, "INSERT INTO tasks (type, args, expire) VALUES ('add', %s, now() + '1h')", [json.dumps({"x": 1, "y": 1})]
    )
    wait_for(lambda: query(conn, "SELECT count(*) FROM tasks WHERE status = 'done'")[0][0] == 2001, timeout=30)
    processes.stop_all()
    for proc in handlers:
        output = processes.output(proc)
        assert REFUSED in output and "PREPARE_STATEMENTS=true is ignored" in output, output
        assert "LISTEN_NOTIFY=true is ignored" in output, output
        assert "database error" not in output, output
    assert "not linked" not in pgbouncer.output()  # "got packet 'A' (a notification) from server when not linked"
    assert query(conn, "SELECT count(*) FROM tasks WHERE status <> 'done'")[0][0] == 0
