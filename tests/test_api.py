"""The HTTP API against a real PostgreSQL: every endpoint, every error, and nothing stored by a bad request."""

from __future__ import annotations

import dataclasses
import threading
import uuid

import pytest

from flask_tasks import db
from flask_tasks.config import load_settings
from flask_tasks.web import create_app
from tests.conftest import query

SHIPPED_TYPES = {"add", "divide", "echo", "fibonacci", "mov3d", "multiply", "noop", "prime", "sleep"}
MOV3D_ARGS = {"dt": 0.1, "r0": [0.0, 0.0, 1.0], "v0": [1.0, 0.0, 1.0], "mass": 1.0, "radius": 0.1}


def count_tasks(conn) -> int:
    return query(conn, "SELECT count(*) FROM tasks")[0][0]


def assert_error(response, status: int, message: str | None = None) -> str:
    """The response is {"message": ...} with this status (and never a 500 or an HTML page)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    assert set(response.json) == {"message"}
    assert isinstance(response.json["message"], str) and response.json["message"]
    if message is not None:
        assert response.json["message"] == message
    return response.json["message"]


def assert_rejected(client, conn, body, status: int = 400, message: str | None = None) -> str:
    """POST body as JSON: an error answer, and no task stored."""
    message = assert_error(client.post("/task/new", json=body), status, message)
    assert count_tasks(conn) == 0
    return message


def post_raw(client, data, content_type: str = "application/json"):
    return client.post("/task/new", data=data, content_type=content_type)


# -- creating tasks -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/task/new", "/task"])
def test_create_task(client, conn, settings, path):
    r = client.post(path, json={"type": "add", "args": {"x": 1, "y": 2}})
    assert r.status_code == 201, r.json
    task = r.json
    assert str(uuid.UUID(task["id"])) == task["id"]
    assert task["type"] == "add"
    assert task["args"] == {"x": 1, "y": 2}
    assert task["status"] == "waiting"
    assert task["result"] is None
    assert isinstance(task["created"], int)
    assert settings.max_task_time == 3600
    assert task["expire"] == task["created"] + settings.max_task_time
    assert query(conn, "SELECT id::text, type, args, status FROM tasks") == [
        (task["id"], "add", {"x": 1, "y": 2}, "waiting")
    ]


def test_legacy_body_creates_default_task(client, conn, settings):
    r = client.post("/task/new", json={"required_arg": "test"})
    assert r.status_code == 201, r.json
    task = r.json
    assert settings.default_task_type == "echo"
    assert task["type"] == "echo"
    assert task["required_arg"] == "test"
    assert task["args"] == {"required_arg": "test"}
    assert task["status"] == "waiting"
    assert task["result"] is None
    uuid.UUID(task["id"])
    assert task["expire"] == task["created"] + settings.max_task_time
    assert query(conn, "SELECT type, args FROM tasks") == [("echo", {"required_arg": "test"})]


def test_args_may_be_left_out_for_a_task_without_arguments(client, conn):
    r = client.post("/task/new", json={"type": "noop"})
    assert r.status_code == 201, r.json
    assert r.json["args"] == {}
    assert count_tasks(conn) == 1


def test_int_is_accepted_for_a_float_and_stored_as_float(client, conn):
    r = client.post("/task/new", json={"type": "sleep", "args": {"seconds": 1}})
    assert r.status_code == 201, r.json
    assert r.json["args"]["seconds"] == 1.0
    assert isinstance(r.json["args"]["seconds"], float)
    assert query(conn, "SELECT args->>'seconds' FROM tasks") == [("1.0",)]


def test_defaults_are_stored_with_the_task(client, conn):
    r = client.post("/task/new", json={"type": "mov3d", "args": MOV3D_ARGS})
    assert r.status_code == 201, r.json
    assert r.json["args"] == {**MOV3D_ARGS, "drag": False}
    assert query(conn, "SELECT args->'drag' FROM tasks") == [(False,)]


# -- reading tasks --------------------------------------------------------------


def test_get_task_and_view(client):
    created = client.post("/task/new", json={"type": "add", "args": {"x": 1, "y": 2}}).json

    r = client.get(f"/task/{created['id']}")
    assert r.status_code == 200
    assert r.json == created

    r = client.get(f"/task/{created['id']}/view")
    assert r.status_code == 200
    assert r.json == {"x": 1, "y": 2, **created}


def test_view_of_a_legacy_task_repeats_its_argument(client):
    created = client.post("/task/new", json={"required_arg": "test"}).json
    r = client.get(f"/task/{created['id']}/view")
    assert r.status_code == 200
    assert r.json["required_arg"] == "test"
    assert r.json["id"] == created["id"]


def test_finished_task_shows_its_result(client, conn):
    task_id = client.post("/task/new", json={"type": "add", "args": {"x": 1, "y": 2}}).json["id"]
    query(conn, "UPDATE tasks SET status = 'done', result = '3', finished = now() WHERE id = %s", (task_id,))

    task = client.get(f"/task/{task_id}").json
    assert task["status"] == "done"
    assert task["result"] == 3
    assert isinstance(task["finished"], int)
    assert client.get(f"/task/{task_id}/view").json["result"] == 3


@pytest.mark.parametrize("suffix", ["", "/view"])
def test_unknown_task_is_404(client, suffix):
    message = assert_error(client.get(f"/task/{uuid.uuid4()}{suffix}"), 404)
    assert "may have expired" in message


@pytest.mark.parametrize("suffix", ["", "/view"])
def test_malformed_task_id_is_404(client, suffix):
    message = assert_error(client.get(f"/task/abc{suffix}"), 404)
    assert "[abc]" in message


def test_list_task_types(client):
    r = client.get("/tasks")
    assert r.status_code == 200
    types = r.json
    assert set(types) >= SHIPPED_TYPES
    for name in SHIPPED_TYPES:
        assert {"description", "args", "json_schema", "max_attempts", "timeout", "isolated"} <= set(types[name]), name
        assert isinstance(types[name]["description"], str) and types[name]["description"], name
        assert types[name]["json_schema"]["type"] == "object", name
    assert types["add"]["args"] == {"x": {"type": "int", "required": True}, "y": {"type": "int", "required": True}}
    assert types["add"]["json_schema"]["required"] == ["x", "y"]
    assert types["echo"]["args"] == {"required_arg": {"type": "str", "required": True}}
    assert types["noop"]["args"] == {}
    assert types["sleep"]["args"]["seconds"]["type"] == "float"
    mov3d = types["mov3d"]["args"]
    assert mov3d["r0"] == {"type": "list[float]", "required": True}
    assert mov3d["drag"] == {"type": "bool", "required": False, "default": False}
    assert types["prime"]["json_schema"]["properties"]["n"]["minimum"] == 1


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("data", ['{"type": "add", "args": {"x": 1, "y": 2}', "{'type': 'add'}", "", "nope"])
def test_malformed_json_is_400(client, conn, data):
    message = assert_error(post_raw(client, data), 400)
    assert message.startswith("the request body is not valid JSON")
    assert count_tasks(conn) == 0


def test_body_not_utf8_is_400(client, conn):
    message = assert_error(post_raw(client, b'{"required_arg": "\xff"}'), 400)
    assert message.startswith("the request body is not valid JSON")
    assert count_tasks(conn) == 0


def test_deeply_nested_json_is_400(client, conn):
    # Well under the size limit; json.loads gives up with RecursionError, not ValueError.
    assert_error(post_raw(client, "[" * 100_000), 400)
    assert count_tasks(conn) == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_body_that_is_not_json_is_415(client, conn, content_type):
    assert_error(
        post_raw(client, '{"required_arg": "test"}', content_type),
        415,
        "the request body must be JSON, sent with Content-Type: application/json",
    )
    assert count_tasks(conn) == 0


def test_body_over_the_size_limit_is_413(settings, registry, conn, monkeypatch):
    monkeypatch.setenv("MAX_CONTENT_LENGTH", "100")
    small = load_settings()
    assert small.max_content_length == 100
    client = create_app(small, registry).test_client()

    assert_error(client.post("/task/new", json={"required_arg": "x" * 200}), 413)
    assert count_tasks(conn) == 0
    assert client.post("/task/new", json={"required_arg": "x" * 20}).status_code == 201


def test_body_over_one_mebibyte_is_413_by_default(client, conn, settings):
    assert settings.max_content_length == 1024 * 1024
    assert_rejected(client, conn, {"required_arg": "x" * (1024 * 1024)}, 413)


def test_unknown_type_is_400(client, conn):
    assert_rejected(client, conn, {"type": "nope", "args": {}}, 400, "task type [nope] doesnt exist")


def test_missing_arg_is_400(client, conn):
    assert_rejected(client, conn, {"type": "add", "args": {"x": 1}}, 400, "the required param [y] was not passed.")


def test_legacy_body_missing_arg_is_400(client, conn):
    message = "the required param [required_arg] was not passed."
    assert_rejected(client, conn, {}, 400, message)


@pytest.mark.parametrize(
    ("body", "param", "wanted"),
    [
        ({"type": "add", "args": {"x": "1", "y": 2}}, "x", "int"),
        ({"type": "add", "args": {"x": 1.5, "y": 2}}, "x", "int"),
        ({"type": "add", "args": {"x": True, "y": 2}}, "x", "int"),
        ({"type": "add", "args": {"x": None, "y": 2}}, "x", "int"),
        ({"type": "sleep", "args": {"seconds": "1"}}, "seconds", "float"),
        ({"type": "mov3d", "args": {**MOV3D_ARGS, "r0": [1, "a", 0]}}, "r0", "list[float]"),
        ({"type": "mov3d", "args": {**MOV3D_ARGS, "r0": "1,2,3"}}, "r0", "list[float]"),
        ({"type": "mov3d", "args": {**MOV3D_ARGS, "drag": "yes"}}, "drag", "bool"),
        ({"required_arg": 5}, "required_arg", "str"),
    ],
)
def test_wrong_arg_type_is_400(client, conn, body, param, wanted):
    message = f"the passed param [{param}] doesnt match the required type: [{wanted}]."
    assert_rejected(client, conn, body, 400, message)


@pytest.mark.parametrize(
    "body",
    [
        {"type": "add", "args": {"x": 1, "y": 2, "z": 3}},
        {"required_arg": "test", "z": 3},
        {"type": "noop", "args": {"z": 3}},
    ],
)
def test_extra_arg_is_400(client, conn, body):
    assert_rejected(client, conn, body, 400, "the passed param [z] is not required.")


@pytest.mark.parametrize("args", [[1, 2], "x=1", 1, None])
def test_args_not_an_object_is_400(client, conn, args):
    assert_rejected(client, conn, {"type": "add", "args": args}, 400, "the field [args] must be a JSON object.")


@pytest.mark.parametrize("data", ["3", '"add"', "null", "true"])
def test_body_not_an_object_is_400(client, conn, data):
    message = assert_error(post_raw(client, data), 400)
    assert message.startswith("the request body must be a JSON object")
    assert count_tasks(conn) == 0


@pytest.mark.parametrize("type_value", [1, None, ["add"], {"name": "add"}])
def test_type_not_a_string_is_400(client, conn, type_value):
    body = {"type": type_value, "args": {"x": 1, "y": 2}}
    assert_rejected(client, conn, body, 400, "the field [type] must be a string.")


def test_unknown_top_level_field_is_400(client, conn):
    body = {"type": "add", "args": {"x": 1, "y": 2}, "colour": 5}
    fields = "type, args, priority, run_at, delay, max_attempts, timeout, idempotency_key, notify_url, peer"
    message = f"the field [colour] is not known; a task request has {fields}."
    assert_rejected(client, conn, body, 400, message)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"type": "prime", "args": {"n": 0}}, "n"),
        ({"type": "fibonacci", "args": {"n": 10_001}}, "n"),
        ({"type": "sleep", "args": {"seconds": -1}}, "seconds"),
        ({"type": "mov3d", "args": {**MOV3D_ARGS, "r0": [0.0, 1.0]}}, "r0"),
        ({"type": "mov3d", "args": {**MOV3D_ARGS, "dt": 0}}, "dt"),
    ],
)
def test_constraint_violation_is_400(client, conn, body, param):
    message = assert_rejected(client, conn, body, 400)
    assert message.startswith(f"the passed param [{param}] is invalid")


def raw_mov3d(r0: str, mass: str) -> str:
    """A mov3d request body written by hand, for values that are not JSON (NaN, Infinity)."""
    return (
        '{"type": "mov3d", "args": {"dt": 0.1, "v0": [1, 0, 1], "radius": 0.1, "r0": ' + r0 + ', "mass": ' + mass + "}}"
    )


@pytest.mark.parametrize(
    "data",
    [
        pytest.param('{"required_arg": "a\\u0000b"}', id="nul-character"),
        pytest.param('{"required_arg": "\\ud800"}', id="lone-surrogate"),
        pytest.param(raw_mov3d(r0="[NaN, 0, 1]", mass="1"), id="nan"),
        pytest.param(raw_mov3d(r0="[0, 0, 1]", mass="Infinity"), id="infinity"),
    ],
)
def test_values_postgresql_cannot_store_are_400(client, conn, data):
    # Python's json accepts these; PostgreSQL's jsonb refuses them. The client must hear 400, not 500.
    assert_error(post_raw(client, data), 400)
    assert count_tasks(conn) == 0


def test_unknown_route_is_404_json(client):
    assert_error(client.get("/nope"), 404)
    assert_error(client.post("/tasks/new", json={"type": "noop"}), 404)


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/task/new"), ("PUT", "/task"), ("POST", "/tasks")])
def test_wrong_method_is_405_json(client, conn, method, path):
    assert_error(client.open(path, method=method), 405)
    assert count_tasks(conn) == 0


def test_wrong_method_lists_the_allowed_methods(client):
    # RFC 9110 section 15.5.6: a 405 response must carry an Allow header.
    r = client.delete("/task/new")
    assert r.status_code == 405
    assert "POST" in r.headers.get("Allow", "")


# -- CORS and an unavailable database ------------------------------------------------


def test_cors_allows_only_the_configured_frontend(settings, registry, monkeypatch):
    monkeypatch.setenv("FRONTEND_URL", "https://example.com")
    client = create_app(load_settings(), registry).test_client()

    r = client.get("/tasks", headers={"Origin": "https://example.com"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://example.com"

    r = client.get("/tasks", headers={"Origin": "https://other.example.org"})
    assert r.status_code == 200
    assert "Access-Control-Allow-Origin" not in r.headers

    preflight = {
        "Origin": "https://example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type",
    }
    r = client.options("/task/new", headers=preflight)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://example.com"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]


def test_cors_allows_any_origin_by_default(client):
    r = client.get("/tasks", headers={"Origin": "https://anywhere.example.org"})
    assert r.headers["Access-Control-Allow-Origin"] in ("*", "https://anywhere.example.org")


def test_database_down_is_503(settings, registry, monkeypatch):
    monkeypatch.setattr(db, "_resolved_url", None)  # monkeypatch puts the cached URL back afterwards
    down = dataclasses.replace(settings, database_url="postgresql://postgres@127.0.0.1:1/x")
    client = create_app(down, registry).test_client()

    for _ in range(2):  # the pool must not be left broken by the first failure
        message = assert_error(client.post("/task/new", json={"type": "add", "args": {"x": 1, "y": 2}}), 503)
        assert "database" in message
        assert_error(client.get(f"/task/{uuid.uuid4()}"), 503)
        assert_error(client.get(f"/task/{uuid.uuid4()}/view"), 503)

    # What needs no database still works.
    assert client.get("/tasks").status_code == 200
    assert_error(client.post("/task/new", json={"type": "nope"}), 400, "task type [nope] doesnt exist")


def test_concurrent_requests_each_store_exactly_one_task(settings, registry, conn):
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
