"""nask-task's API shape (POST/GET /api/tasks, GET /api/tasks/<id>) over the same tasks, against a real PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest

from flask_tasks import auth, db, shape
from flask_tasks.config import load_settings
from flask_tasks.web import create_app
from flask_tasks.web.nask_routes import NASK_STATUS
from flask_tasks.webhooks import generate_secret
from tests.conftest import query, wait_for
from tests.test_api import assert_error, count_tasks
from tests.test_auth import add_client, bearer, get_token, make_key, private_pem
from tests.test_openapi import assert_documented, get_document, validator

NASK_FIELDS = ["id", "type", "status", "notify_url", "payload", "result", "error"]


@pytest.fixture(scope="module")
def signing_pem() -> str:
    return private_pem(make_key())


@pytest.fixture
def auth_app(settings, registry, signing_pem):
    """A server that issues tokens (as in tests/test_auth.py)."""
    return create_app(dataclasses.replace(settings, jwt_private_pem=signing_pem, jwt_public_pems=None), registry)


@pytest.fixture
def api(auth_app):
    client = auth_app.test_client()
    # From another host: from loopback, with no operator configured, a request is an operator's and sees every task.
    client.environ_base["REMOTE_ADDR"] = "192.0.2.10"
    return client


def token_for(app, name: str, tasks: str = "multiply") -> dict[str, str]:
    """The Authorization header of a new client's token: its subject is `name`."""
    return bearer(get_token(app.test_client(), name, add_client(app, name, tasks)))


def webhook_app(base_env, registry, monkeypatch, **env: str):
    """A server built from the environment, with these variables set too."""
    for key, value in {**base_env, **env}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(db, "_resolved_url", None)
    return create_app(load_settings(), registry)


def post(client, body: dict, headers: dict | None = None) -> dict:
    r = client.post("/api/tasks", json=body, headers=headers)
    assert r.status_code == 201, r.get_data(as_text=True)
    assert list(r.json) == NASK_FIELDS
    return r.json


def nask_task(client, task_id: str, headers: dict | None = None) -> dict:
    r = client.get(f"/api/tasks/{task_id}", headers=headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json


# -- creating and reading ----------------------------------------------------------------


def test_a_nask_task_is_an_ordinary_task(client, conn):
    posted = post(client, {"type": "prime", "payload": {"input": 100}})
    assert posted == {
        "id": posted["id"],
        "type": "prime",
        "status": "PENDING",
        "notify_url": None,
        "payload": {"input": 100},
        "result": None,
        "error": None,
    }
    assert uuid.UUID(posted["id"])
    assert nask_task(client, posted["id"]) == posted

    # The same task, read the usual way: the input is the type's one argument.
    ours = client.get(f"/task/{posted['id']}")
    assert ours.status_code == 200
    assert ours.json["id"] == posted["id"] and ours.json["type"] == "prime"
    assert ours.json["args"] == {"n": 100} and ours.json["status"] == shape.WAITING
    assert query(conn, "SELECT type, args, subject FROM tasks") == [("prime", {"n": 100}, None)]


def test_the_input_is_checked_as_the_argument(client, conn):
    r = client.post("/api/tasks", json={"type": "prime", "payload": {"input": 0}})
    assert_error(r, 400, "the passed param [n] is invalid: Input should be greater than or equal to 1.")
    r = client.post("/api/tasks", json={"type": "prime", "payload": {"input": "7"}})
    assert_error(r, 400, "the passed param [n] doesnt match the required type: [int].")
    r = client.post("/api/tasks", json={"type": "sleep", "payload": {"input": 2}})
    assert r.status_code == 201 and r.json["payload"] == {"input": 2.0}  # stored as the float it is
    assert count_tasks(conn) == 1


def test_a_task_posted_at_task_shows_its_arguments(client):
    one = client.post("/task", json={"type": "fibonacci", "args": {"n": 10}}).json
    assert nask_task(client, one["id"])["payload"] == {"input": 10}
    two = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}}).json
    assert nask_task(client, two["id"])["payload"] == {"input": {"x": 1, "y": 2}}
    none = client.post("/task", json={"type": "noop"}).json
    assert nask_task(client, none["id"])["payload"] == {"input": {}}


def test_an_unknown_task_is_404_as_at_task(client):
    for task_id in (str(uuid.uuid4()), "not-a-uuid"):
        r = client.get(f"/api/tasks/{task_id}")
        assert_error(r, 404, client.get(f"/task/{task_id}").json["message"])


def test_every_status_has_its_nask_word():
    assert set(NASK_STATUS) == set(shape.STATUSES)
    assert sorted(NASK_STATUS.values()) == ["FAILURE", "PENDING", "REVOKED", "STARTED", "SUCCESS"]


def test_status_words_follow_a_task_a_handler_runs(client, processes):
    slow = post(client, {"type": "sleep", "payload": {"input": 1.5}})
    prime = post(client, {"type": "prime", "payload": {"input": 10}})
    boom = post(client, {"type": "boom", "payload": {"input": "it broke"}})
    assert {nask_task(client, t["id"])["status"] for t in (slow, prime, boom)} == {"PENDING"}

    processes.start("handler.py")
    wait_for(lambda: nask_task(client, slow["id"])["status"] == "STARTED")
    done = wait_for(lambda: (t := nask_task(client, prime["id"]))["status"] == "SUCCESS" and t)
    assert done["result"] == 29 and done["error"] is None
    failed = wait_for(lambda: (t := nask_task(client, boom["id"]))["status"] == "FAILURE" and t)
    assert failed["result"] is None and failed["error"]["message"] == "RuntimeError: it broke"
    assert "Traceback" in failed["error"]["traceback"]
    slept = wait_for(lambda: (t := nask_task(client, slow["id"]))["status"] == "SUCCESS" and t)
    assert slept["result"] == 1.5
    assert client.get(f"/task/{boom['id']}").json["status"] == shape.FAILED


def test_a_cancelled_task_is_revoked(client):
    posted = post(client, {"type": "fibonacci", "payload": {"input": 20}})
    assert client.post(f"/task/{posted['id']}/cancel").status_code == 200
    revoked = nask_task(client, posted["id"])
    assert revoked["status"] == "REVOKED" and revoked["result"] is None


# -- notify_url ---------------------------------------------------------------------------


def test_notify_url_is_kept_and_shown(base_env, registry, monkeypatch):
    client = webhook_app(
        base_env, registry, monkeypatch, WEBHOOK_SECRET=generate_secret(), NOTIFY_ALLOW_PRIVATE="true"
    ).test_client()
    url = "http://127.0.0.1:8000/"
    posted = post(client, {"type": "prime", "notify_url": url, "payload": {"input": 5}})
    assert posted["notify_url"] == url
    assert nask_task(client, posted["id"])["notify_url"] == url
    assert client.get(f"/task/{posted['id']}").json["notify"]["url"] == url
    posted = post(client, {"type": "prime", "notify_url": None, "payload": {"input": 5}})
    assert posted["notify_url"] is None


def test_notify_url_needs_a_webhook_secret(client, conn):
    r = client.post("/api/tasks", json={"type": "prime", "notify_url": "https://example.com/", "payload": {"input": 5}})
    assert "needs a webhook secret on the server: set WEBHOOK_SECRET" in assert_error(r, 400)
    assert count_tasks(conn) == 0


def test_a_private_notify_url_is_refused_unless_allowed(base_env, registry, monkeypatch, conn):
    client = webhook_app(base_env, registry, monkeypatch, WEBHOOK_SECRET=generate_secret()).test_client()
    r = client.post("/api/tasks", json={"type": "prime", "notify_url": "http://127.0.0.1/", "payload": {"input": 5}})
    assert assert_error(r, 400).startswith("the field [notify_url] is refused:")
    r = client.post("/api/tasks", json={"type": "prime", "notify_url": 5, "payload": {"input": 5}})
    assert_error(r, 400)
    assert count_tasks(conn) == 0


# -- bad requests -----------------------------------------------------------------------

BAD_BODIES = [
    ([], "the request body must be a JSON object"),
    ("prime", "the request body must be a JSON object"),
    (None, "the request body must be a JSON object"),
    ({"type": "prime", "payload": {"input": 5}, "args": {"n": 5}}, "the field [args] is not known"),
    ({"type": "prime", "payload": {"input": 5}, "priority": 1}, "the field [priority] is not known"),
    ({"payload": {"input": 5}}, "the field [type] is required."),
    ({"type": 5, "payload": {"input": 5}}, "the field [type] must be a string."),
    ({"type": ["prime"], "payload": {"input": 5}}, "the field [type] must be a string."),
    ({"type": "nope", "payload": {"input": 5}}, "task type [nope] doesnt exist"),
    ({"type": "prime"}, "the field [payload] is required"),
    ({"type": "prime", "payload": 5}, "the field [payload] must be a JSON object"),
    ({"type": "prime", "payload": [5]}, "the field [payload] must be a JSON object"),
    ({"type": "prime", "payload": {}}, "the field [payload.input] is required."),
    ({"type": "prime", "payload": {"n": 5}}, "the field [payload.n] is not known; a payload has input."),
    ({"type": "prime", "payload": {"input": 5, "extra": 1}}, "the field [payload.extra] is not known"),
    ({"type": "prime", "payload": {"input": None}}, "the passed param [n] doesnt match the required type: [int]."),
    ({"type": "echo", "payload": {"input": "a\u0000b"}}, "the request holds a value that cannot be stored"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES, ids=[str(b)[:50] for b, _ in BAD_BODIES])
def test_a_bad_body_is_400_with_a_message(client, conn, body, message):
    r = client.post("/api/tasks", data=json.dumps(body), content_type="application/json")
    assert message in assert_error(r, 400)
    assert count_tasks(conn) == 0


def test_malformed_json_and_other_content_types_are_refused(client, conn):
    r = client.post("/api/tasks", data='{"type":', content_type="application/json")
    assert assert_error(r, 400).startswith("the request body is not valid JSON")
    assert_error(client.post("/api/tasks", data="type=prime", content_type="text/plain"), 415)
    assert count_tasks(conn) == 0


@pytest.mark.parametrize(
    ("type_name", "takes"),
    [("add", "takes x, y"), ("mov3d", "takes dt, r0, v0, mass, radius, drag"), ("noop", "takes no arguments")],
)
def test_a_type_without_exactly_one_argument_is_400(client, conn, type_name, takes):
    message = assert_error(client.post("/api/tasks", json={"type": type_name, "payload": {"input": 1}}), 400)
    assert message.startswith("nask-task's shape needs a task type with one argument")
    assert f"[{type_name}] {takes};" in message
    assert count_tasks(conn) == 0


# -- tokens: protected types, whose tasks, the listing ------------------------------------


def test_a_protected_type_needs_a_token_that_allows_it(api, auth_app, conn):
    body = {"type": "classified", "payload": {"input": 1}}
    r = api.post("/api/tasks", json=body)
    assert_error(r, 401, "task type [classified] is protected: send Authorization: Bearer <token>")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(api.post("/api/tasks", json=body, headers=token_for(auth_app, "other", "multiply")), 403)
    assert count_tasks(conn) == 0
    allowed = token_for(auth_app, "spy", "classified")
    posted = post(api, body, allowed)
    assert query(conn, "SELECT subject FROM tasks") == [("spy",)]
    assert nask_task(api, posted["id"], allowed) == posted
    assert_error(api.get(f"/api/tasks/{posted['id']}"), 404)  # another subject's task does not exist


def test_listing_needs_a_token(api):
    post(api, {"type": "prime", "payload": {"input": 3}})
    r = api.get("/api/tasks")
    assert "needs a token" in assert_error(r, 401)
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="flask-tasks"'
    r = api.get("/api/tasks", headers={"Authorization": "Bearer nonsense"})
    assert_error(r, 401)
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_a_token_lists_only_its_subjects_tasks_newest_first(api, auth_app):
    alice, bob = token_for(auth_app, "alice"), token_for(auth_app, "bob")
    assert api.get("/api/tasks", headers=alice).json == {"tasks": []}
    mine = [post(api, {"type": "fibonacci", "payload": {"input": n}}, alice) for n in range(3)]
    theirs = post(api, {"type": "fibonacci", "payload": {"input": 50}}, bob)
    anyones = post(api, {"type": "fibonacci", "payload": {"input": 60}})
    mine.append(api.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}}, headers=alice).json)

    listed = api.get("/api/tasks", headers=alice)
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json["tasks"]] == [t["id"] for t in reversed(mine)]
    assert listed.json["tasks"][0]["payload"] == {"input": {"x": 1, "y": 2}}
    assert listed.json["tasks"][1:] == [nask_task(api, t["id"], alice) for t in reversed(mine[:3])]
    assert [t["id"] for t in api.get("/api/tasks", headers=bob).json["tasks"]] == [theirs["id"]]
    assert anyones["id"] not in {t["id"] for t in listed.json["tasks"]}

    assert [t["id"] for t in api.get("/api/tasks?limit=2", headers=alice).json["tasks"]] == [
        mine[3]["id"],
        mine[2]["id"],
    ]
    assert len(api.get("/api/tasks?limit=500", headers=alice).json["tasks"]) == 4


@pytest.mark.parametrize("limit", ["0", "501", "-1", "+5", "1.5", "x", "", "1e2", " 5", "\u0665", "9" * 5000])
def test_a_bad_limit_is_400(api, auth_app, limit):
    r = api.get("/api/tasks", query_string={"limit": limit}, headers=token_for(auth_app, "alice"))
    assert_error(r, 400, "the query parameter [limit] must be an integer from 1 to 500")


def test_the_newest_100_by_default(api, auth_app, conn):
    alice = token_for(auth_app, "alice")
    post(api, {"type": "fibonacci", "payload": {"input": 1}}, alice)
    # 120 more of alice's tasks, created a second apart (older than the one posted above).
    query(
        conn,
        """INSERT INTO tasks (type, args, subject, created, expire)
           SELECT 'fibonacci', jsonb_build_object('n', i), 'alice', now() - make_interval(secs => i),
                  now() + interval '1 hour'
           FROM generate_series(1, 120) i""",
    )
    tasks = api.get("/api/tasks", headers=alice).json["tasks"]
    assert len(tasks) == 100
    assert [t["payload"]["input"] for t in tasks] == [1] + list(range(1, 100))


# -- the API document ---------------------------------------------------------------------


def test_the_request_forms_are_the_types_of_one_argument(client, registry):
    document = get_document(client)
    schemas = document["components"]["schemas"]
    forms = {form["properties"]["type"]["const"]: form for form in schemas["NaskTaskRequest"]["oneOf"]}
    one_argument = [name for name in registry.names() if len(registry.get(name).model.model_fields) == 1]
    assert sorted(forms) == one_argument and "prime" in forms and "add" not in forms
    assert forms["prime"]["properties"]["payload"]["properties"]["input"]["minimum"] == 1
    assert forms["classified"]["x-protected"] is True
    check = validator(document, {"$ref": "#/components/schemas/NaskTaskRequest"})
    assert check.is_valid({"type": "prime", "payload": {"input": 5}, "notify_url": None})
    for bad in (
        {"type": "prime", "payload": {"input": 0}},
        {"type": "add", "payload": {"input": 1}},
        {"type": "prime"},
    ):
        assert not check.is_valid(bad)

    examples = document["paths"]["/api/tasks"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert examples["prime"]["value"] == {"type": "prime", "payload": {"input": 1}}
    for name in ("prime", "fibonacci", "echo", "classified"):
        body = examples[name]["value"]
        check.validate(body)
        r = client.post("/api/tasks", json=body)
        assert r.status_code == (401 if name == "classified" else 201), r.get_data(as_text=True)
        assert_documented(document, "POST", "/api/tasks", r)


def test_every_answer_is_documented(api, auth_app):
    document = get_document(api)
    alice = token_for(auth_app, "alice")
    answers = [
        ("POST", "/api/tasks", api.post("/api/tasks", json={"type": "prime", "payload": {"input": 5}})),
        ("POST", "/api/tasks", api.post("/api/tasks", json={"type": "prime", "payload": {"input": 5}}, headers=alice)),
        ("POST", "/api/tasks", api.post("/api/tasks", json={"type": "add", "payload": {"input": 5}})),
        ("POST", "/api/tasks", api.post("/api/tasks", json={"type": "classified", "payload": {"input": 5}})),
        (
            "POST",
            "/api/tasks",
            api.post("/api/tasks", json={"type": "classified", "payload": {"input": 5}}, headers=alice),
        ),
        ("POST", "/api/tasks", api.post("/api/tasks", data="x", content_type="text/plain")),
        ("GET", "/api/tasks", api.get("/api/tasks")),
        ("GET", "/api/tasks", api.get("/api/tasks", headers=alice)),
        ("GET", "/api/tasks", api.get("/api/tasks?limit=0", headers=alice)),
        ("GET", "/api/tasks", api.get("/api/tasks", headers={"Authorization": "Bearer x"})),
    ]
    task_id = answers[1][2].json["id"]
    for some_id, headers in ((task_id, alice), (task_id, None), ("nope", None), (task_id, {"Authorization": "x"})):
        answers.append(("GET", "/api/tasks/{task_id}", api.get(f"/api/tasks/{some_id}", headers=headers)))
    assert [r.status_code for _, _, r in answers] == [
        201,
        201,
        400,
        401,
        403,
        415,
        401,
        200,
        400,
        401,
        200,
        404,
        404,
        401,
    ]
    for method, path, r in answers:
        assert_documented(document, method, path, r)


def test_an_unavailable_database_is_503_and_documented(settings, registry, monkeypatch, signing_pem):
    monkeypatch.setattr(db, "_resolved_url", None)
    down = dataclasses.replace(
        settings, database_url="postgresql://postgres@127.0.0.1:1/x", jwt_private_pem=signing_pem
    )
    app = create_app(down, registry)
    client = app.test_client()
    document = get_document(client)
    token, _ = auth.issue_token(auth.load_keys(down), down, "alice", [])
    for method, path, url, headers in [
        ("POST", "/api/tasks", "/api/tasks", None),
        ("GET", "/api/tasks/{task_id}", f"/api/tasks/{uuid.uuid4()}", None),
        ("GET", "/api/tasks", "/api/tasks", bearer(token)),
    ]:
        body = {"type": "prime", "payload": {"input": 5}} if method == "POST" else None
        r = client.open(url, method=method, json=body, headers=headers)
        assert "database" in assert_error(r, 503)
        assert_documented(document, method, path, r)
