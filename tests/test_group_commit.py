"""Group commit: a web worker's threads share the commits of their single-task inserts.

Rows that one transaction inserted share its id (xmin), which shows whether commits were shared.
"""

from __future__ import annotations

import dataclasses

import pytest

from flask_tasks.web import create_app
from tests.conftest import admin_connect, query, same_as_get, wait_for
from tests.helpers import free_port, http, in_threads, start_web

THREADS = 8


def transactions(conn) -> tuple[int, int]:
    """(tasks stored, transactions that stored them)."""
    [(tasks, commits)] = query(conn, "SELECT count(*), count(DISTINCT xmin::text) FROM tasks")
    return tasks, commits


@pytest.fixture
def threaded_app(settings, registry):
    return create_app(dataclasses.replace(settings, gunicorn_threads=THREADS, group_commit=True), registry)


def test_concurrent_single_tasks_share_commits_and_each_is_answered_as_stored(threaded_app, conn):
    answers = []

    def post(n: int) -> None:
        client = threaded_app.test_client()
        for i in range(25):
            r = client.post("/task/new", json={"type": "add", "args": {"x": n, "y": i}})
            answers.append((r.status_code, r.json))

    in_threads(THREADS, post)
    assert {status for status, _ in answers} == {201}
    assert len({task["id"] for _, task in answers}) == 200
    tasks, commits = transactions(conn)
    assert tasks == 200
    assert commits < tasks, "no two requests shared a commit"
    client = threaded_app.test_client()
    for _, task in answers[::10]:
        same_as_get(task, client.get(f"/task/{task['id']}").json)


def test_a_value_postgresql_refuses_fails_only_its_own_request(threaded_app, conn):
    answers = []

    def post(n: int) -> None:
        client = threaded_app.test_client()
        for i in range(20):
            bad = n == 3 and i == 10
            args = {"required_arg": "nul \u0000 here" if bad else f"{n}-{i}"}
            r = client.post("/task/new", json={"type": "echo", "args": args})
            answers.append((bad, r.status_code, r.json))

    in_threads(THREADS, post)
    [(_, status, refused)] = [answer for answer in answers if answer[0]]
    assert status == 400 and "cannot be stored" in refused["message"]
    good = [task["id"] for bad, status, task in answers if not bad and status == 201]
    assert len(good) == THREADS * 20 - 1
    assert sorted(good) == sorted(id_ for (id_,) in query(conn, "SELECT id::text FROM tasks"))


def test_one_idempotency_key_posted_at_once_makes_one_task(threaded_app, conn):
    answers = []
    body = {"type": "add", "args": {"x": 1, "y": 2}, "idempotency_key": "at-once"}

    def post(n: int) -> None:
        r = threaded_app.test_client().post("/task/new", json=body)
        answers.append((r.status_code, r.json["id"]))

    in_threads(THREADS, post)
    assert sorted(status for status, _ in answers) == [200] * (THREADS - 1) + [201]
    assert len({task_id for _, task_id in answers}) == 1
    assert transactions(conn)[0] == 1


def test_tasks_with_idempotency_keys_commit_alone(threaded_app, conn):
    """Rows of one batch would lock their keys in arrival order: two workers' batches holding the same
    keys in another order could deadlock. A task with a key is stored on its request's own connection."""

    def post(n: int) -> None:
        client = threaded_app.test_client()
        for i in range(10):
            body = {"type": "add", "args": {"x": n, "y": i}, "idempotency_key": f"k-{n}-{i}"}
            assert client.post("/task/new", json=body).status_code == 201

    in_threads(THREADS, post)
    assert transactions(conn) == (THREADS * 10, THREADS * 10)


def test_the_writer_reconnects_after_the_server_ended_its_connection(threaded_app, conn):
    client = threaded_app.test_client()
    body = {"type": "add", "args": {"x": 1, "y": 2}}
    assert client.post("/task/new", json=body).status_code == 201
    web = "FROM pg_stat_activity WHERE application_name = 'flask-tasks web'"
    query(conn, f"SELECT pg_terminate_backend(pid) {web}")
    wait_for(lambda: query(conn, f"SELECT count(*) {web}") == [(0,)])  # their FATAL messages are sent
    for _ in range(3):
        assert client.post("/task/new", json=body).status_code == 201
    assert transactions(conn)[0] == 4


def test_without_group_commit_each_task_commits_alone(settings, registry, conn):
    app = create_app(dataclasses.replace(settings, gunicorn_threads=THREADS), registry)  # the default

    def post(n: int) -> None:
        client = app.test_client()
        for i in range(10):
            assert client.post("/task/new", json={"type": "add", "args": {"x": n, "y": i}}).status_code == 201

    in_threads(THREADS, post)
    assert transactions(conn) == (THREADS * 10, THREADS * 10)


def test_gunicorn_workers_with_threads_share_commits(processes, conn):
    """The real server: each worker forks, then starts its own writer on its first request."""
    port = free_port()
    start_web(processes, port, {"GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "4", "GROUP_COMMIT": "true"})
    url = f"http://127.0.0.1:{port}/task/new"
    answers = []

    def post(n: int) -> None:
        for i in range(25):
            answers.append(http("POST", url, {"type": "add", "args": {"x": n, "y": i}}))

    in_threads(16, post)
    assert {status for status, _ in answers} == {201}
    tasks, commits = transactions(conn)
    assert tasks == 400 and len({task["id"] for _, task in answers}) == 400
    assert commits < tasks, "no two requests shared a commit"
    # Their connection budget: each worker's writer, and no connection from the pool.
    [(connections,)] = query(conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'flask-tasks web'")
    assert connections == 2


def test_database_refusing_connections_is_503_and_then_the_writer_recovers(threaded_app, conn, server_url):
    client = threaded_app.test_client()
    body = {"type": "add", "args": {"x": 1, "y": 2}}
    assert client.post("/task/new", json=body).status_code == 201
    name = conn.get_dsn_parameters()["dbname"]
    admin = admin_connect(server_url)
    query(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        query(conn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'flask-tasks web'")
        for _ in range(2):  # neither the pool nor the writer is left broken by the first failure
            response = client.post("/task/new", json=body)
            assert response.status_code == 503 and "database" in response.json["message"]
    finally:
        query(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()
    assert client.post("/task/new", json=body).status_code == 201
    assert transactions(conn)[0] == 2
