"""Group commit of single-task requests: concurrent inserts share a statement, and fail alone."""

from __future__ import annotations

import dataclasses
import json
import threading

import psycopg2
import pytest

from flask_tasks.batching import InsertBatcher
from flask_tasks.web import create_app, new_ids
from tests.conftest import query, wait_for


def row(**changes) -> dict:
    base = {"type": "noop", "args": {}, "max_attempts": 3, "timeout": None, "priority": 0}
    base |= {"run_at": None, "delay": 0, "idempotency_key": None, "subject": None}
    return {"id": new_ids(1)[0], **base, **changes}


def insert_concurrently(conn, rows: list[dict]) -> list:
    """Insert rows from one thread each; the first holds the writer's seat until all others have queued."""
    batcher, results = InsertBatcher(), [None] * len(rows)
    queued = threading.Event()

    def first_connection():
        queued.wait(10)
        return conn

    def insert(index: int) -> None:
        connection = first_connection if index == 0 else (lambda: conn)
        try:
            results[index] = batcher.insert(connection, rows[index], 3600)
        except Exception as err:  # noqa: BLE001 - the test looks at it
            results[index] = err

    first = threading.Thread(target=insert, args=(0,))
    first.start()
    wait_for(lambda: batcher._writing)
    others = [threading.Thread(target=insert, args=(i,)) for i in range(1, len(rows))]
    for thread in others:
        thread.start()
    wait_for(lambda: len(batcher._queue) == len(rows) - 1)
    queued.set()
    for thread in [first, *others]:
        thread.join(10)
    return results


def test_requests_queued_during_a_write_share_the_next_statement(conn):
    rows = [row() for _ in range(12)]
    results = insert_concurrently(conn, rows)
    assert all(json.loads(text)["id"] == r["id"] for text, r in zip(results, rows, strict=True))
    # Rows written by one statement share its transaction id: two statements for 12 requests.
    assert query(conn, "SELECT count(DISTINCT xmin::text), count(*) FROM tasks") == [(2, 12)]


def test_a_value_postgresql_refuses_fails_only_its_own_request(conn):
    rows = [row(), row(), row(type="echo", args={"required_arg": "a\u0000b"}), row()]
    results = insert_concurrently(conn, rows)
    assert isinstance(results[2], psycopg2.DataError)
    assert [json.loads(results[i])["id"] for i in (0, 1, 3)] == [rows[i]["id"] for i in (0, 1, 3)]
    assert query(conn, "SELECT count(*) FROM tasks") == [(3,)]


def test_the_same_idempotency_key_twice_in_a_batch_stores_one(conn):
    rows = [row(), row(idempotency_key="k"), row(idempotency_key="k")]
    results = insert_concurrently(conn, rows)
    assert results[1] is not None and results[2] is None  # the second finds the first's task
    assert query(conn, "SELECT count(*) FROM tasks WHERE idempotency_key = 'k'") == [(1,)]


def test_a_database_error_reaches_every_request_of_the_batch(conn, database_url):
    broken = psycopg2.connect(database_url)
    broken.close()
    results = insert_concurrently(broken, [row(), row(), row()])
    assert all(isinstance(r, psycopg2.InterfaceError) for r in results)


def test_many_threads_through_the_api_each_store_exactly_one_task(settings, registry, conn):
    app = create_app(dataclasses.replace(settings, gunicorn_threads=8), registry)
    barrier, answers = threading.Barrier(8), []

    def post(n: int) -> None:
        client = app.test_client()
        barrier.wait()
        for i in range(25):
            r = client.post("/task/new", json={"type": "add", "args": {"x": n, "y": i}})
            answers.append((r.status_code, r.json["args"], r.json["id"]))

    threads = [threading.Thread(target=post, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 200 and {status for status, _, _ in answers} == {201}
    stored = dict(query(conn, "SELECT id::text, args FROM tasks"))
    assert stored == {task_id: args for _, args, task_id in answers}


@pytest.mark.parametrize("threads", [1, 4])
def test_legacy_bodies_answer_in_the_legacy_form(settings, registry, threads):
    client = create_app(dataclasses.replace(settings, gunicorn_threads=threads), registry).test_client()
    r = client.post("/task/new", json={"required_arg": "hi"})
    assert r.status_code == 201 and r.json["required_arg"] == "hi" and r.json["args"] == {"required_arg": "hi"}
