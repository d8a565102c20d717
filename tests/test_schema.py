"""The schema: schema.sql equals the migrations applied in order, and migrating is safe at once from many."""

from __future__ import annotations

import threading
import uuid

import pytest

from flask_tasks import db
from flask_tasks.sql import SCHEMA_VERSION, migrations
from tests.conftest import admin_connect, query, with_database

CATALOG = {
    "columns": """SELECT table_name, column_name, data_type, is_nullable, column_default
                  FROM information_schema.columns WHERE table_schema = 'public'
                  ORDER BY table_name, column_name""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "constraints": """SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
                      WHERE conrelid = 'tasks'::regclass ORDER BY conname""",
    "options": "SELECT reloptions FROM pg_class WHERE relname = 'tasks'",
    "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'tasks'::regclass ORDER BY 1",
    "functions": "SELECT proname, prosrc FROM pg_proc WHERE proname LIKE 'flask_tasks%%' ORDER BY 1",
}


@pytest.fixture
def empty_database(server_url):
    """Make empty databases on the test server; drop them afterwards."""
    admin = admin_connect(server_url)
    names = []

    def make() -> str:
        name = f"flask_tasks_schema_{uuid.uuid4().hex[:12]}"
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return with_database(server_url, name)

    yield make
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def catalog(url: str) -> dict[str, list[tuple]]:
    conn = db.connect(url, "flask-tasks tests")
    try:
        return {name: query(conn, sql) for name, sql in CATALOG.items()}
    finally:
        conn.close()


def test_schema_sql_equals_the_migrations_in_order(empty_database):
    fresh, migrated = empty_database(), empty_database()
    conn = db.connect(fresh, "flask-tasks tests")
    assert db.migrate(conn) == SCHEMA_VERSION
    conn.close()

    conn = db.connect(migrated, "flask-tasks tests")
    steps = migrations()
    assert [version for version, _ in steps] == list(range(1, SCHEMA_VERSION + 1))
    with conn.cursor() as cur:
        cur.execute(db.QUERIES["schema_version_table"])
        cur.execute(steps[0][1])
        cur.execute(db.QUERIES["record_schema_version"], {"version": 1})
    assert db.migrate(conn) == SCHEMA_VERSION  # from version 1 up through the numbered files
    assert query(conn, "SELECT version FROM flask_tasks_schema ORDER BY 1") == [
        (v,) for v in range(1, SCHEMA_VERSION + 1)
    ]
    conn.close()

    assert catalog(fresh) == catalog(migrated)


def test_migrating_twice_changes_nothing(empty_database):
    url = empty_database()
    conn = db.connect(url, "flask-tasks tests")
    db.migrate(conn)
    before = catalog(url)
    assert db.migrate(conn) == SCHEMA_VERSION
    assert catalog(url) == before
    conn.close()


def test_many_processes_migrating_at_once(empty_database):
    url = empty_database()
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            conn = db.connect(url, "flask-tasks tests")
            db.migrate(conn)
            conn.close()
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=migrate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    conn = db.connect(url, "flask-tasks tests")
    assert query(conn, "SELECT version FROM flask_tasks_schema") == [(SCHEMA_VERSION,)]
    conn.close()
