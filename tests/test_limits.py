"""Transport and input limits, security headers, CORS, and hostile strings stored verbatim."""

from __future__ import annotations

import dataclasses
import json

import pytest

from flask_tasks.config import load_settings
from flask_tasks.web import create_app
from tests.conftest import query, wait_for
from tests.test_api import assert_error, assert_rejected, count_tasks
from tests.test_handler import finished


def nested(depth: int) -> dict:
    """args nested `depth` levels deep: {"a": {"a": ... {}}}."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# -- limits --------------------------------------------------------------------------


def test_args_deeper_than_the_limit_are_400(settings, registry, conn):
    client = create_app(dataclasses.replace(settings, args_max_depth=5), registry).test_client()
    accepted = client.post("/task/new", json={"type": "echo", "args": {"required_arg": "x"}})
    assert accepted.status_code == 201
    too_deep = {"type": "add", "args": {"x": 1, "y": 2, "z": nested(5)}}  # 6 levels with args itself
    message = assert_error(client.post("/task/new", json=too_deep), 400)
    assert "nested too deeply" in message and "5" in message
    lists = {"type": "add", "args": {"x": [[[[[1]]]]]}}
    assert "nested too deeply" in assert_error(client.post("/task/new", json=lists), 400)
    assert count_tasks(conn) == 1


def test_args_depth_is_counted_before_the_type_is_checked(settings, registry, conn):
    # The limit protects everything after it, including the per-type validation.
    client = create_app(dataclasses.replace(settings, args_max_depth=3), registry).test_client()
    body = {"type": "noop", "args": nested(4)}
    assert "nested too deeply" in assert_error(client.post("/task/new", json=body), 400)


def test_args_larger_than_the_limit_are_400(settings, registry, conn):
    client = create_app(dataclasses.replace(settings, args_max_bytes=100), registry).test_client()
    assert client.post("/task/new", json={"required_arg": "x" * 50}).status_code == 201
    message = assert_error(client.post("/task/new", json={"required_arg": "x" * 100}), 400)
    assert "at most 100" in message
    # Counted in UTF-8 bytes: 40 characters of 3 bytes each are over 100.
    assert_error(client.post("/task/new", json={"required_arg": "€" * 40}), 400)
    assert count_tasks(conn) == 1


@pytest.mark.parametrize(
    "body",
    ['{"a":[1e15,1e15,1e15]}', '{"a":"\\u00e9\\ud800\\n"}', '{"a":[1e-7,-1e15,5e-324]}', '{"a":{"b":[[],{}]}}'],
)
def test_args_encoded_again_are_at_most_5_times_their_body(body):
    # The rule check_args_limits relies on to skip measuring args that came in a small body.
    args = json.loads(body)
    size = len(json.dumps(args, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    assert size <= 5 * len(body.encode())


def test_bulk_over_the_limit_is_400_and_stores_nothing(settings, registry, conn):
    client = create_app(dataclasses.replace(settings, max_bulk_tasks=3), registry).test_client()
    body = [{"type": "noop"}] * 4
    assert "at most 3" in assert_error(client.post("/task/new", json=body), 400)
    assert count_tasks(conn) == 0


def test_limits_are_configurable_from_the_environment(settings, monkeypatch):
    for name, value in (("ARGS_MAX_DEPTH", "7"), ("ARGS_MAX_BYTES", "1000"), ("MAX_RESULT_BYTES", "5000")):
        monkeypatch.setenv(name, value)
    loaded = load_settings()
    assert (loaded.args_max_depth, loaded.args_max_bytes, loaded.max_result_bytes) == (7, 1000, 5000)


def test_a_result_over_the_limit_fails_the_task_clearly(conn, processes):
    from tests.conftest import enqueue

    small = enqueue(conn, "big_result", {"size": 100})
    big = enqueue(conn, "big_result", {"size": 5000})
    processes.start("handler.py", MAX_RESULT_BYTES="1000")
    assert wait_for(lambda: finished(conn, small))["status"] == "done"
    row = wait_for(lambda: finished(conn, big))
    assert row["status"] == "failed"
    assert row["attempts"] == 1  # not retried: the same input gives the same result
    assert row["error"]["message"] == "the result is 5002 bytes of JSON: more than MAX_RESULT_BYTES=1000"
    assert query(conn, "SELECT result FROM tasks WHERE id = %s", (big,)) == [(None,)]


def test_error_text_is_cut_to_64_kib(conn, processes):
    from tests.conftest import enqueue

    task_id = enqueue(conn, "huge_error", {"size": 1_000_000})
    processes.start("handler.py")
    row = wait_for(lambda: finished(conn, task_id))
    assert row["status"] == "failed"
    assert len(row["error"]["message"]) < 70_000 and "characters cut" in row["error"]["message"]
    assert len(row["error"]["traceback"]) < 70_000


# -- headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/tasks"), ("GET", "/task/nope"), ("POST", "/task/new"), ("GET", "/openapi.json"), ("GET", "/missing")],
)
def test_security_headers_on_every_response(client, method, path):
    r = client.open(path, method=method)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert "Server" not in r.headers or not any(ch.isdigit() for ch in r.headers["Server"])


def test_no_traceback_in_any_error(client):
    for r in (client.post("/task/new", data=b"{", content_type="application/json"), client.get("/task/%00")):
        text = r.get_data(as_text=True)
        assert r.status_code < 500 and "Traceback" not in text and 'File "' not in text


# -- CORS ----------------------------------------------------------------------------


def cors_client(registry, monkeypatch, frontend: str):
    monkeypatch.setenv("FRONTEND_URL", frontend)
    return create_app(load_settings(), registry).test_client()


def test_cors_allows_each_listed_origin_and_no_other(settings, registry, monkeypatch):
    client = cors_client(registry, monkeypatch, "https://app.example.com, https://admin.example.com")
    for origin in ("https://app.example.com", "https://admin.example.com"):
        r = client.get("/tasks", headers={"Origin": origin})
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert "Access-Control-Allow-Credentials" not in r.headers
    for origin in ("https://evil.example.com", "https://app.example.com.evil.net", "null"):
        r = client.get("/tasks", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in r.headers
        preflight = client.options(
            "/task/new",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_preflight_allows_the_authorization_header(settings, registry, monkeypatch):
    client = cors_client(registry, monkeypatch, "https://app.example.com")
    r = client.options(
        "/task/new",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()


def test_cors_origin_with_a_trailing_slash_still_matches(settings, registry, monkeypatch):
    client = cors_client(registry, monkeypatch, "https://app.example.com/")
    r = client.get("/tasks", headers={"Origin": "https://app.example.com"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


def test_cors_star_never_allows_credentials(settings, registry, monkeypatch):
    client = cors_client(registry, monkeypatch, "*")
    r = client.get("/tasks", headers={"Origin": "https://anywhere.example.org"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in r.headers


# -- hostile strings -----------------------------------------------------------------

SQL_STRINGS = [
    "'; DROP TABLE tasks; --",
    "1' OR '1'='1",
    '"); DELETE FROM clients; --',
    "$1; SELECT pg_sleep(10)",
    "%(id)s %s {task_columns}",
    "Robert'); DROP TABLE students;--",
    "\\'; TRUNCATE tasks; --",
]


@pytest.mark.parametrize("text", SQL_STRINGS)
def test_sql_looking_strings_are_stored_verbatim(client, conn, text):
    body = {"type": "echo", "args": {"required_arg": text}, "idempotency_key": text}
    r = client.post("/task/new", json=body)
    assert r.status_code == 201
    task_id = r.json["id"]
    assert query(conn, "SELECT args->>'required_arg', idempotency_key FROM tasks WHERE id = %s", (task_id,)) == [
        (text, text)
    ]
    assert client.get(f"/task/{task_id}").json["args"] == {"required_arg": text}
    # The same text in every other place a request can put it: clear 4xx answers, nothing stored or broken.
    assert_rejected_types = client.post("/task/new", json={"type": text, "args": {}})
    assert assert_error(assert_rejected_types, 400) == f"task type [{text}] doesnt exist"
    assert client.post("/task/new", json={"type": "echo", "args": {text: "x"}}).status_code == 400
    assert client.get(f"/task/{text}").status_code in (404, 405)
    assert client.post(f"/task/{text}/cancel").status_code in (404, 405)
    token = client.post("/token", json={"client_id": text, "client_secret": text})
    assert token.status_code in (401, 503)
    bulk = client.post("/task/new", json=[{"type": "echo", "args": {"required_arg": text}}])
    assert bulk.status_code == 201 and bulk.json[0]["args"]["required_arg"] == text
    assert count_tasks(conn) == 2
    assert query(conn, "SELECT count(*) FROM clients") == [(0,)]


def test_sql_looking_strings_in_a_client_name_are_kept_verbatim(settings, registry, conn):
    from tests.test_auth import add_client

    name = "x'); DROP TABLE clients; --"
    add_client(create_app(settings, registry), name, "multiply")
    assert query(conn, "SELECT name FROM clients") == [(name,)]


def test_rejected_bodies_store_nothing(client, conn):
    assert_rejected(client, conn, {"type": "add", "args": {"x": "1; DROP TABLE tasks", "y": 2}})
