"""Database connections for the web: one pool per worker process, one connection per request on `g`."""

from __future__ import annotations

import os
import threading

import psycopg2
import psycopg2.extensions
import psycopg2.pool
from flask import current_app, g

from flask_tasks import db
from flask_tasks.config import Settings
from flask_tasks.group_commit import GroupCommit

EXTENSION = "flask_tasks.pool"
GROUP_COMMIT = "flask_tasks.group_commit"


class ConnectionPool:
    """One pool per web worker process; a pool inherited across fork is never used."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _current(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                url = db.database_url(self.settings, "web")
                db.open_connection(self.settings, "web").close()  # the schema, once per process
                # At most one connection a thread, each opened when a request first needs it (single tasks
                # stored by group commit need none) and then kept: psycopg2 keeps up to minconn idle ones,
                # but would open them all at once if given minconn here.
                # Connected as db.connect() connects (that first connection found out whether through a pooler).
                threads = self.settings.gunicorn_threads
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    0,
                    threads,
                    url,
                    application_name="flask-tasks web",
                    **db.connect_arguments(url, self.settings.prepare_statements),
                )
                self._pool.minconn = threads
                self._pid = os.getpid()
            return self._pool

    def get(self) -> psycopg2.extensions.connection:
        # A pooled connection that the server ended while it sat idle: open another one rather than
        # fail the request on it; a new one has nothing to read.
        conn = self._getconn()
        for _ in range(self.settings.gunicorn_threads):  # the pool holds at most that many
            if not db.ended_by_server(conn):
                break
            self._current().putconn(conn, close=True)
            conn = self._getconn()
        conn.autocommit = True
        return conn

    def _getconn(self) -> psycopg2.extensions.connection:
        try:
            return self._current().getconn()
        except psycopg2.OperationalError:
            if not db.revive_embedded(self.settings):  # the embedded server died: one process restarts it
                raise
            return self._current().getconn()

    def put(self, conn: psycopg2.extensions.connection, broken: bool) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.putconn(conn, close=broken or bool(conn.closed))


def get_db() -> psycopg2.extensions.connection:
    """The request's connection, taken from the pool on first use."""
    if "db" not in g:
        g.db = current_app.extensions[EXTENSION].get()
    return g.db


def group_commit() -> GroupCommit | None:
    """The worker's GroupCommit for single-task inserts; None unless GROUP_COMMIT=true with threads."""
    return current_app.extensions[GROUP_COMMIT]


def close_db(exc: BaseException | None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        broken = isinstance(exc, db.TRANSIENT_ERRORS) or g.pop("db_broken", False)
        current_app.extensions[EXTENSION].put(conn, broken)
