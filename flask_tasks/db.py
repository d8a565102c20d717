"""Connections to PostgreSQL (the configured one or the embedded default) and the schema."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import select
import threading
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from flask_tasks import embedded
from flask_tasks.config import Settings
from flask_tasks.sql import QUERIES, SCHEMA, SCHEMA_VERSION, migrations

log = logging.getLogger("flask_tasks.db")

# Errors that mean "the database is unreachable for now", as opposed to a bad statement.
TRANSIENT_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)

psycopg2.extras.register_uuid()
# PostgreSQL writes a jsonb value out canonically, with nothing around it, so the decoder's
# raw_decode reads it whole: json.loads would first look for a BOM, and for whitespace at both
# ends with a regular expression, costing four times as much (a handler decodes the args of
# tens of thousands of tasks a second). Not for json, which keeps the text as it was given.
_raw_decode = json.JSONDecoder().raw_decode


def _jsonb_value(text: str) -> Any:
    return _raw_decode(text)[0]


psycopg2.extras.register_default_jsonb(globally=True, loads=_jsonb_value)

_resolved_url: str | None = None
_resolve_lock = threading.Lock()  # a handler's two threads may ask at once
_migrated_pid: int | None = None


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _start_embedded(settings: Settings) -> str:
    # Every process of `honcho start` calls this: the server starts once, is shared,
    # and stops when the last process exits (see flask_tasks/embedded.py).
    return embedded.start(settings.embedded_dir)


def revive_embedded(settings: Settings) -> bool:
    """After a failed connection: True if the embedded server had died and runs again (connect again)."""
    if settings.database_url:
        return False
    try:
        return embedded.revive(settings.embedded_dir)
    except Exception as err:  # noqa: BLE001 (the connection error is what the caller reports)
        log.warning("could not start the embedded PostgreSQL again: %s", err)
        return False


def database_url(settings: Settings, process: str) -> str:
    """The URL to connect to, starting the embedded server when none is configured.

    Logs once per process which database it uses.
    """
    global _resolved_url
    with _resolve_lock:
        if _resolved_url is None:
            if settings.database_url:
                _resolved_url = settings.database_url
                log.info("%s: using PostgreSQL at %s", process, safe_url(_resolved_url))
            else:
                _resolved_url = _start_embedded(settings)
                log.info("%s: using the embedded PostgreSQL in %s", process, settings.embedded_dir)
        return _resolved_url


def error_text(err: psycopg2.Error) -> str:
    """PostgreSQL's own words for an error, without the statement it quotes."""
    primary = err.diag.message_primary if err.diag else None
    if not primary:
        return " ".join(str(err).split())
    detail = err.diag.message_detail
    return f"{primary} ({detail})" if detail else primary


# For every connection: give up connecting after 5 s; notice a dead peer (a half-open
# TCP connection after a partition) within about 30 s instead of waiting forever;
# no statement may run longer than a minute or wait for a lock longer than 10 s.
# The settings go in the startup packet (`options`), or, where a pooler refuses that,
# in front of each statement: see connect().
CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    # Keepalives stop while data waits unacknowledged: a statement sent into a cut link would
    # otherwise wait for the kernel's retransmissions to give up (about 15 minutes).
    "tcp_user_timeout": 30000,
    "options": "-c statement_timeout=60000 -c lock_timeout=10000",
}


class PreparingConnection(psycopg2.extensions.connection):
    """A connection that prepares each named statement the first time it runs it here.

    A prepared statement is parsed and planned once per connection instead of at
    every call. Off with PREPARE_STATEMENTS=false, e.g. behind PgBouncer in
    transaction mode, where a session's prepared statements are not kept.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepared: set[str] = set()


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _prepared_form(name: str) -> tuple[str, list[str]] | None:
    """(PREPARE statement, parameter names in $n order) for a named statement, or None if it cannot be."""
    sql = QUERIES[name]
    if sql.split(None, 1)[0].upper() not in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
        return None
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return f"PREPARE {name} AS " + _PLACEHOLDER.sub(number, sql).replace("%%", "%"), names


PREPARED = {name: form for name in QUERIES if (form := _prepared_form(name)) is not None}


def _execute(cur: psycopg2.extensions.cursor, name: str, params: dict[str, Any] | None) -> None:
    conn = cur.connection
    if not isinstance(conn, PreparingConnection) or name not in PREPARED:
        cur.execute(QUERIES[name], params)
        return
    prepare, names = PREPARED[name]
    if name not in conn.prepared:
        cur.execute(prepare)
        conn.prepared.add(name)
    values = [(params or {})[key] for key in names]
    cur.execute(f"EXECUTE {name}({', '.join(['%s'] * len(values))})" if values else f"EXECUTE {name}", values)


# A handler's connection: the claim must walk tasks_claim_idx in order, stop after a
# batch, and fetch only the rows it locked (by ctid). Two plans broke that:
# - before autovacuum has analyzed a table that just grew (a burst of tasks), the
#   planner could take it for tiny and fetch every waiting task with a bitmap scan,
#   then sort them: 21 ms instead of 2.6 ms for 30,000 waiting tasks;
# - idle handlers claim from an empty table, so their prepared claim settles on a
#   generic plan made for one, which fetched the locked rows by scanning the whole
#   table: on PostgreSQL 15, 100,000 tasks drained at 2,400 tasks/s instead of 35,000.
# No statement a handler runs is better off with a bitmap or a sequential scan.
HANDLER_OPTIONS = " -c enable_bitmapscan=off -c enable_seqscan=off"


class SetLocalConnection(psycopg2.extensions.connection):
    """A connection whose settings are set in each statement's own transaction, not at its start.

    For a connection pooler that refuses the `options` startup parameter, such as
    PgBouncer: in transaction mode a server connection serves another client after
    each transaction, so a plain SET would leak into theirs. Each statement goes out
    as `SET LOCAL statement_timeout=60000; ...; <statement>` in one query string: one
    round trip, run as one transaction (implicit, or the explicit one it is part of),
    whose SET LOCALs end with it. The cursor returns the last statement's rows.
    """

    def __init__(self, dsn: str, *args: Any, set_local: str = "", **kwargs: Any) -> None:
        super().__init__(dsn, *args, **kwargs)
        self.set_local = set_local
        self.cursor_factory = SetLocalCursor


# Statements that cannot run in a transaction block: they go without the SET LOCALs.
_OUTSIDE_TRANSACTION = re.compile(r"\s*(?:--[^\n]*\n\s*)*VACUUM\b", re.IGNORECASE)


class SetLocalCursor(psycopg2.extensions.cursor):
    """A cursor that sends its connection's SET LOCALs in front of each statement."""

    def execute(self, query: Any, vars: Any = None) -> None:  # noqa: A002 (psycopg2's name)
        if isinstance(query, str) and not _OUTSIDE_TRANSACTION.match(query):
            query = self.connection.set_local + query
        super().execute(query, vars)


_SETTING = re.compile(r"-c\s*(\w+)=(\S+)")


def set_local(options: str) -> str:
    """The settings of an `options` string ("-c name=value ...") as SET LOCAL statements, to go in front of one."""
    return "".join(f"SET LOCAL {name}={value}; " for name, value in _SETTING.findall(options))


# The URLs whose server refused the `options` startup parameter (a pooler), as this process found:
# it connects to them without it, at once, and sets the settings with SET LOCAL (see SetLocalConnection).
_options_refused: set[str] = set()


def connect_arguments(url: str, prepare: bool = False, options: str = "") -> dict[str, Any]:
    """psycopg2.connect's keyword arguments (but `url` and application_name) for a connection to `url`
    with CONNECT_OPTIONS' settings plus `options` (more "-c name=value")."""
    settings = CONNECT_OPTIONS["options"] + options
    if url in _options_refused:
        # No prepared statements: behind transaction pooling another client's PREPARE may be
        # there ("already exists") and ours may not ("does not exist").
        factory: Any = partial(SetLocalConnection, set_local=set_local(settings))
        return {**{k: v for k, v in CONNECT_OPTIONS.items() if k != "options"}, "connection_factory": factory}
    factory = PreparingConnection if prepare else psycopg2.extensions.connection
    return {**CONNECT_OPTIONS, "options": settings, "connection_factory": factory}


def _refuses_options(err: psycopg2.OperationalError) -> bool:
    # PgBouncer: "FATAL:  unsupported startup parameter: options"
    return "startup parameter: options" in str(err)


def connect(
    url: str, application_name: str, prepare: bool = False, options: str = ""
) -> psycopg2.extensions.connection:
    """An autocommit connection: each statement commits on its own.

    Where the server refuses the settings at connection start (PgBouncer in its stock
    configuration) or drops them (PgBouncer with `ignore_startup_parameters = options`),
    connect again without them and set them in each statement's transaction instead,
    and do so at once from then on in this process.
    """
    if url not in _options_refused:
        try:
            conn = psycopg2.connect(url, application_name=application_name, **connect_arguments(url, prepare, options))
        except psycopg2.OperationalError as err:
            if not _refuses_options(err):
                raise
            what = "refused"
        else:
            conn.autocommit = True
            try:
                taken = _settings_taken(conn)
            except psycopg2.Error:
                conn.close()
                raise
            if taken:
                return conn
            conn.close()
            what = "ignored"
        _options_refused.add(url)
        log.log(
            logging.WARNING if prepare else logging.INFO,
            "%s: the server %s the `options` startup parameter (a pooler such as PgBouncer?): connecting "
            "without it; statement_timeout, lock_timeout and the planner settings go with SET LOCAL in front of "
            "each statement instead%s",
            application_name,
            what,
            "; PREPARE_STATEMENTS=true is ignored: prepared statements do not survive transaction pooling"
            if prepare
            else "",
        )
    conn = psycopg2.connect(url, application_name=application_name, **connect_arguments(url, prepare, options))
    conn.autocommit = True
    return conn


def _settings_taken(conn: psycopg2.extensions.connection) -> bool:
    """Whether the settings sent at connection start are in effect (a pooler may drop them silently)."""
    with conn.cursor() as cur:  # not prepared: behind a pooler a PREPARE would land on a shared connection
        cur.execute(QUERIES["settings_from_client"])
        return bool(cur.fetchone()[0])


def migrate(conn: psycopg2.extensions.connection) -> int:
    """Bring the schema to SCHEMA_VERSION; safe when several processes start at once."""
    # One transaction, so the advisory lock covers the whole change.
    with conn, conn.cursor() as cur:
        cur.execute(QUERIES["lock_schema"])
        cur.execute(QUERIES["schema_version_table"])
        cur.execute(QUERIES["schema_version"])
        current = cur.fetchone()[0]
        if current == 0:
            cur.execute(SCHEMA)
            cur.execute(QUERIES["record_schema_version"], {"version": SCHEMA_VERSION})
            log.info("created the schema, version %s", SCHEMA_VERSION)
            return SCHEMA_VERSION
        for version, sql in migrations():
            if version > current:
                cur.execute(sql)
                cur.execute(QUERIES["record_schema_version"], {"version": version})
                log.info("migrated the schema to version %s", version)
    return max(current, SCHEMA_VERSION)


def open_connection(settings: Settings, process: str, options: str = "") -> psycopg2.extensions.connection:
    """A new connection with the schema in place (migrated once per process)."""
    global _migrated_pid
    try:
        conn = connect(database_url(settings, process), f"flask-tasks {process}", settings.prepare_statements, options)
    except psycopg2.OperationalError:
        if not revive_embedded(settings):
            raise
        conn = connect(database_url(settings, process), f"flask-tasks {process}", settings.prepare_statements, options)
    if _migrated_pid != os.getpid():
        migrate(conn)
        _migrated_pid = os.getpid()
    return conn


class Backoff:
    """Growing pauses between reconnection attempts: 0.1 s doubling up to 5 s."""

    def __init__(self, first: float = 0.1, longest: float = 5.0) -> None:
        self.first, self.longest, self.delay = first, longest, first

    def reset(self) -> None:
        self.delay = self.first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.longest)
        return delay


def run(conn: psycopg2.extensions.connection, name: str, params: dict[str, Any] | None = None) -> list[tuple]:
    """Execute a named statement and return its rows (empty when it returns none)."""
    with conn.cursor() as cur:
        _execute(cur, name, params)
        return cur.fetchall() if cur.description is not None else []


def run_dicts(conn: psycopg2.extensions.connection, name: str, params: dict[str, Any]) -> list[dict]:
    """Execute a named statement and return its rows as dicts."""
    with conn.cursor() as cur:
        _execute(cur, name, params)
        names = [column.name for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def retry_delay(attempt: int, first: float, longest: float = 3600.0) -> float:
    """Exponential backoff with jitter: about first, 2 first, 4 first... (at most `longest`), give or take 25%."""
    return min(first * 2 ** min(attempt - 1, 40), longest) * random.uniform(0.75, 1.25)


def ended_by_server(conn: psycopg2.extensions.connection) -> bool:
    """Whether an idle connection has something to read: only when the server ended it (it restarted, the
    session was terminated) and sent its FATAL message or closed the stream."""
    poller = select.poll()  # not select.select(): that fails for a descriptor above 1023
    poller.register(conn, select.POLLIN)
    return bool(poller.poll(0))


class OwnConnection:
    """The connection of one thread of a process: opened on first use, and again after a failure or a fork."""

    def __init__(self, settings: Settings, process: str, options: str = "", listen: bool = False) -> None:
        self.settings, self.process, self.options, self.listen = settings, process, options, listen
        self.conn: psycopg2.extensions.connection | None = None
        self.pid = 0

    def get(self) -> psycopg2.extensions.connection:
        # Never reuse a connection inherited across fork: check the pid.
        if self.conn is None or self.conn.closed or self.pid != os.getpid():
            self.conn = open_connection(self.settings, self.process, self.options)
            self.pid = os.getpid()
            if self.listen and isinstance(self.conn, SetLocalConnection):
                # Through a pooler (see connect()): in transaction mode the LISTEN would stay on a
                # server connection that serves other clients, and no notification would reach us.
                log.warning(
                    "%s: LISTEN_NOTIFY=true is ignored through a pooler: it looks for tasks every POLL_INTERVAL",
                    self.process,
                )
                self.listen = False
            if self.listen:
                run(self.conn, "listen")
        return self.conn

    def drop(self) -> None:
        """Close it (after an error): the next get() opens a new one."""
        if self.conn is not None:
            self.conn.close()  # never raises, even on a dead connection
        self.conn = None
