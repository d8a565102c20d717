"""Task rows by plain SQL, for tests whose task types the test process's registry does not know
(a taskpack installed only on a handler's PYTHONPATH) or that should not depend on the web module."""

from __future__ import annotations

import json

import psycopg2.extensions

from tests.conftest import query


def insert_task(conn: psycopg2.extensions.connection, type_name: str, args: dict) -> str:
    """A waiting task of this type, due now; its id."""
    sql = "INSERT INTO tasks (type, args, expire) VALUES (%s, %s, now() + interval '1 hour') RETURNING id::text"
    return query(conn, sql, (type_name, json.dumps(args)))[0][0]


def task_state(conn: psycopg2.extensions.connection, task_id: str) -> dict:
    """status, result, last_error, attempts and worker of a task."""
    sql = "SELECT status, result, last_error, attempts, worker FROM tasks WHERE id = %s"
    status, result, error, attempts, worker = query(conn, sql, (task_id,))[0]
    return {"status": status, "result": result, "error": error, "attempts": attempts, "worker": worker}


def finished(conn: psycopg2.extensions.connection, task_id: str) -> dict | None:
    """The task's state once it is done or failed, else None (for wait_for)."""
    state = task_state(conn, task_id)
    return state if state["status"] in ("done", "failed") else None
