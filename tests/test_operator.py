"""Who is an operator (tokens with the operator scope, OPERATOR_PASSWORD, loopback), and what one does:
retry a task, cancel or retry every task matching filters, purge finished ones."""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
import urllib.request
import uuid

import jwt
import pytest

from flask_tasks import actions, auth, db, listing
from flask_tasks.models import ApiError
from flask_tasks.web import access, create_app
from tests.conftest import enqueue, query, wait_for
from tests.helpers import free_port, http, start_web
from tests.test_api import assert_error
from tests.test_auth import add_client, bearer, get_token, make_key, private_pem

REMOTE = {"REMOTE_ADDR": "192.0.2.10"}  # a documentation address: not loopback (the test client sends nothing)
PASSWORD = "correct horse battery staple"
NIL = "00000000-0000-0000-0000-000000000000"


def basic(password: str, user: str = "ops") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def signing_pem() -> str:
    return private_pem(make_key())


@pytest.fixture
def make_app(settings, registry, signing_pem, monkeypatch):
    """An app with these settings changed (it signs tokens), whose operator-client check is never cached."""
    monkeypatch.setattr(access, "OPERATOR_CLIENTS_CACHE_SECONDS", 0.0)

    def make(**changes):
        return create_app(dataclasses.replace(settings, jwt_private_pem=signing_pem, **changes), registry)

    return make


def operator_token(app, name: str = "ops") -> dict[str, str]:
    result = app.test_cli_runner().invoke(args=["clients", "add", name, "--operator"])
    assert result.exit_code == 0, result.output
    secret = dict(line.split(": ", 1) for line in result.output.splitlines() if ": " in line)["client_secret"]
    r = app.test_client().post("/token", json={"client_id": name, "client_secret": secret})
    assert r.status_code == 200 and r.json["scope"] == "operator"
    return bearer(r.json["access_token"])


def failed_task(conn, type_name: str = "boom", subject: str | None = None, **changes: object) -> str:
    """A task that failed (its columns then set as `changes` say); its id."""
    task_id = enqueue(conn, type_name, {"x": 1, "y": 1} if type_name == "add" else {})
    query(
        conn,
        """UPDATE tasks SET status = 'failed', attempts = max_attempts, finished = now() - interval '1 minute',
                            started = now() - interval '2 minutes', worker = 'w1', result = NULL,
                            last_error = '{"message": "boom"}', subject = %s, progress = '{"fraction": 0.5}',
                            expire = now() + interval '5 minutes'
           WHERE id = %s""",
        (subject, task_id),
    )
    for column, value in changes.items():
        query(conn, f"UPDATE tasks SET {column} = %s WHERE id = %s", (value, task_id))
    return task_id


def retried_counts(conn) -> dict[str, int]:
    return dict(query(conn, "SELECT type, retried FROM task_stats WHERE worker = %s", (NIL,)))


# -- operator clients and their tokens ---------------------------------------------------------------


def test_an_operator_clients_token_carries_the_scope(make_app):
    app = make_app()
    api = app.test_client()
    headers = operator_token(app, "ops")
    claims = jwt.decode(headers["Authorization"].split()[1], options={"verify_signature": False})
    assert claims["scope"] == "operator" and claims["sub"] == "ops"
    plain = get_token(api, "alice", add_client(app, "alice"))
    assert "scope" not in jwt.decode(plain, options={"verify_signature": False})
    r = api.post("/token", json={"client_id": "alice", "client_secret": "wrong"})
    assert r.status_code == 401
    listed = app.test_cli_runner().invoke(args=["clients", "list"])
    assert "ops\t(none)\toperator" in listed.output and "alice\tmultiply\n" in listed.output


def test_scopes_are_read_as_rfc_9068_says():
    assert auth.has_scope({"scope": "read operator write"}, "operator")
    assert not auth.has_scope({"scope": "operators"}, "operator")
    assert not auth.has_scope({"scope": ["operator"]}, "operator")
    assert not auth.has_scope({}, "operator")


# -- who may list every task -------------------------------------------------------------------------


def test_loopback_is_the_operator_while_nothing_is_configured(make_app, conn):
    api = make_app().test_client()
    task_id = enqueue(conn, "add", {"x": 1, "y": 2})
    r = api.get("/task")
    assert r.status_code == 200 and [t["id"] for t in r.json["tasks"]] == [task_id]
    assert api.get("/task", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    assert api.get("/task", headers={"Origin": "http://localhost"}).status_code == 200  # the test client's host
    # Not from loopback: nobody.
    r = api.get("/task", environ_base=REMOTE)
    assert "loopback" in assert_error(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer") and "Basic" not in str(r.headers)
    # Through a proxy on this host, every request comes from loopback: refused.
    for header in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}):
        assert "proxy" in assert_error(api.get("/task", headers=header), 403)
    # A page of another site, through the operator's browser.
    assert "cross-site" in assert_error(api.get("/task", headers={"Origin": "https://evil.example"}), 403)
    assert "cross-site" in assert_error(api.get("/task", headers={"Origin": "null"}), 403)
    assert "cross-site" in assert_error(api.get("/task", headers={"Sec-Fetch-Site": "cross-site"}), 403)
    r = api.post("/task/bulk/cancel", json={"all": True}, headers={"Origin": "https://evil.example"})
    assert_error(r, 403)
    # Nor a page whose own name resolves to 127.0.0.1 (DNS rebinding), nor one naming itself in a header.
    rebound = {"Host": "evil.example:5000", "Origin": "http://evil.example:5000"}
    assert "Host" in assert_error(api.post("/task/bulk/cancel", json={"all": True}, headers=rebound), 403)
    forwarded = {"Origin": "https://evil.example", "X-Forwarded-Host": "evil.example"}
    assert_error(api.post("/task/bulk/cancel", json={"all": True}, headers=forwarded), 403)
    assert query(conn, "SELECT status FROM tasks")[0][0] == "waiting"
    for host in ("127.0.0.1:5000", "[::1]:5000", "127.0.0.2", "LOCALHOST"):
        assert api.get("/task", headers={"Host": host}).status_code == 200, host


def test_an_operator_password_is_then_needed(make_app, conn):
    api = make_app(operator_password=PASSWORD).test_client()
    enqueue(conn, "add", {"x": 1, "y": 2})
    r = api.get("/task")  # loopback is no longer enough
    assert "password" in assert_error(r, 401)
    challenges = r.headers.getlist("WWW-Authenticate")
    assert 'Basic realm="flask-tasks"' in challenges and any(c.startswith("Bearer") for c in challenges)
    assert api.get("/task", headers=basic(PASSWORD)).status_code == 200
    assert api.get("/task", headers=basic(PASSWORD, user="")).status_code == 200  # any user name
    assert api.get("/task", headers=basic(PASSWORD), environ_base=REMOTE).status_code == 200  # from anywhere
    assert api.get("/task", headers={**basic(PASSWORD), "X-Forwarded-For": "203.0.113.9"}).status_code == 200
    for wrong in (PASSWORD[:-1], PASSWORD + "x", "", "é"):
        r = api.get("/task", headers=basic(wrong))
        assert assert_error(r, 401) == "wrong operator password"
        assert 'Basic realm="flask-tasks"' in r.headers.getlist("WWW-Authenticate")
    assert_error(api.get("/task", headers={"Authorization": "Basic %%%"}), 401)
    r = api.get("/task", headers={**basic(PASSWORD), "Origin": "https://evil.example"})
    assert "cross-site" in assert_error(r, 403)
    # The server's own page may use it: same origin, or the name a proxy was asked by.
    assert api.get("/task", headers={**basic(PASSWORD), "Origin": "http://localhost"}).status_code == 200
    headers = {**basic(PASSWORD), "Origin": "https://tasks.example", "X-Forwarded-Host": "tasks.example"}
    assert api.get("/task", headers=headers).status_code == 200


def test_an_operator_client_ends_the_loopback_rule_and_its_token_works_anywhere(make_app, conn):
    app = make_app()
    api = app.test_client()
    task_id = enqueue(conn, "add", {"x": 1, "y": 2})
    assert api.get("/task").status_code == 200
    ops = operator_token(app)
    assert "operator token" in assert_error(api.get("/task"), 401)
    r = api.get("/task", headers=ops, environ_base=REMOTE)
    assert r.status_code == 200 and [t["id"] for t in r.json["tasks"]] == [task_id]
    # A token is not ambient like a password: another site's page cannot send it, so Origin does not matter.
    assert api.get("/task", headers={**ops, "Origin": "https://elsewhere.example"}).status_code == 200
    assert api.get("/task", headers={**ops, "X-Forwarded-For": "203.0.113.9"}).status_code == 200
    r = api.post("/task/bulk/cancel", json={"all": True}, headers=ops, environ_base=REMOTE)
    assert r.status_code == 200 and r.json == {"cancelled": 1}


def test_a_token_without_the_scope_is_no_operator(make_app, conn):
    app = make_app()
    api = app.test_client()
    alice = bearer(get_token(api, "alice", add_client(app, "alice")))
    mine = api.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}}, headers=alice).json["id"]
    enqueue(conn, "add", {"x": 3, "y": 4})
    r = api.get("/task", headers=alice)  # even from loopback: a token speaks for its subject
    assert [t["id"] for t in r.json["tasks"]] == [mine]
    r = api.post("/task/bulk/cancel", json={"all": True}, headers=alice)
    assert "scope" in assert_error(r, 403)
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert_error(api.get("/task", headers={"Authorization": "Bearer nonsense"}), 401)
    assert_error(api.get("/task", headers={"Authorization": "Digest x"}), 401)


def test_a_forged_operator_scope_is_refused(make_app):
    api = make_app().test_client()
    other = make_key()
    claims = {"iss": "flask-tasks", "aud": "flask-tasks", "sub": "eve", "iat": int(time.time()), "scope": "operator"}
    claims["exp"] = claims["iat"] + 60
    token = jwt.encode(claims, other, algorithm="RS256", headers={"kid": auth.key_id(other.public_key())})
    assert_error(api.get("/task", headers=bearer(token), environ_base=REMOTE), 401)


def test_whether_an_operator_client_exists_is_cached_for_a_few_seconds(settings, registry, signing_pem, monkeypatch):
    app = create_app(dataclasses.replace(settings, jwt_private_pem=signing_pem), registry)
    api = app.test_client()
    assert api.get("/task").status_code == 200
    operator_token(app)
    assert api.get("/task").status_code == 200  # the answer of a moment ago still holds
    monkeypatch.setattr(access, "OPERATOR_CLIENTS_CACHE_SECONDS", 0.0)
    assert api.get("/task").status_code == 401


def test_behind_a_real_server_a_proxy_header_is_refused(processes, base_env):
    port = free_port()
    start_web(processes, port, {**base_env, "GUNICORN_WORKERS": "1"})
    base = f"http://127.0.0.1:{port}"
    status, page = http("GET", f"{base}/task")
    assert status == 200 and page == {"tasks": [], "next": None}
    request = urllib.request.Request(f"{base}/task", headers={"X-Forwarded-For": "203.0.113.9"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403


# -- retry -------------------------------------------------------------------------------------------


def test_a_failed_task_is_retried_from_its_first_attempt(make_app, conn, settings):
    api = make_app().test_client()
    task_id = failed_task(conn)
    before = api.get(f"/task/{task_id}").json
    r = api.post(f"/task/{task_id}/retry")
    assert r.status_code == 200
    task = r.json
    assert task == api.get(f"/task/{task_id}").json
    assert task["status"] == "waiting" and task["attempts"] == 0 and task["max_attempts"] == before["max_attempts"]
    assert task["result"] is None and task["finished"] is None and task["error"] is None
    assert task["last_error"] == {"message": "boom"}  # kept: why it had failed
    assert task["progress"] is None and task["cancel_requested"] is False
    assert abs(task["run_at"] - time.time()) < 5
    assert abs(task["expire"] - (time.time() + settings.max_task_time)) < 5
    assert retried_counts(conn) == {"boom": 1}
    # Again once it failed again: counted in the same row.
    query(conn, "UPDATE tasks SET status = 'cancelled', finished = now() WHERE id = %s", (task_id,))
    assert api.post(f"/task/{task_id}/retry").status_code == 200
    assert retried_counts(conn) == {"boom": 2}


@pytest.mark.parametrize("status", ["waiting", "running", "done"])
def test_only_failed_or_cancelled_tasks_are_retried(make_app, conn, status):
    api = make_app().test_client()
    task_id = failed_task(conn, status=status)
    message = assert_error(api.post(f"/task/{task_id}/retry"), 409)
    assert message == f"task [{task_id}] is {status}: only a failed or cancelled task can be retried"
    assert query(conn, "SELECT status FROM tasks WHERE id = %s", (task_id,))[0][0] == status
    assert retried_counts(conn) == {}


def test_a_task_a_peer_ran_is_not_retried_here(make_app, conn):
    api = make_app().test_client()
    task_id = failed_task(conn, peer="far")
    assert "post it again" in assert_error(api.post(f"/task/{task_id}/retry"), 409)


def test_retrying_an_unknown_task_is_404(make_app):
    api = make_app().test_client()
    assert "not found" in assert_error(api.post(f"/task/{uuid.uuid4()}/retry"), 404)
    assert "UUIDs" in assert_error(api.post("/task/not-a-uuid/retry"), 404)


def test_who_may_retry_a_task(make_app, conn):
    app = make_app()
    api = app.test_client()
    alice = bearer(get_token(api, "alice", add_client(app, "alice")))
    bob = bearer(get_token(api, "bob", add_client(app, "bob")))
    ops = operator_token(app)
    alices = failed_task(conn, subject="alice")
    # Another subject, or nobody from afar: as if it did not exist.
    assert_error(api.post(f"/task/{alices}/retry", headers=bob), 404)
    assert_error(api.post(f"/task/{alices}/retry", environ_base=REMOTE), 404)
    assert_error(api.post(f"/task/{alices}/retry"), 404)  # an operator client exists: loopback is nobody
    assert api.post(f"/task/{alices}/retry", headers=alice, environ_base=REMOTE).status_code == 200
    theirs = failed_task(conn, subject="carol")
    assert api.post(f"/task/{theirs}/retry", headers=ops, environ_base=REMOTE).status_code == 200
    # A task posted without a token: anyone, as for a cancel.
    anyones = failed_task(conn)
    assert api.post(f"/task/{anyones}/retry", environ_base=REMOTE).status_code == 200
    assert_error(api.post(f"/task/{anyones}/retry", headers={"Authorization": "Bearer nonsense"}), 401)


def test_a_password_sent_to_retry_must_be_right(make_app, conn):
    api = make_app(operator_password=PASSWORD).test_client()
    theirs = failed_task(conn, subject="carol")
    assert_error(api.post(f"/task/{theirs}/retry", headers=basic("wrong")), 401)
    assert_error(api.post(f"/task/{theirs}/retry"), 404)
    assert api.post(f"/task/{theirs}/retry", headers=basic(PASSWORD), environ_base=REMOTE).status_code == 200


def test_a_retried_task_runs_again(client, conn, processes):
    query(conn, "INSERT INTO side_effects (key, pid) VALUES ('again', 0)")  # its first run fails on this key
    task_id = enqueue(conn, "record", {"key": "again"}, max_attempts=1)
    processes.start("handler.py")
    failed = wait_for(lambda: (t := client.get(f"/task/{task_id}").json)["status"] == "failed" and t)
    assert "duplicate key" in failed["error"]["message"]
    query(conn, "DELETE FROM side_effects")
    r = client.post(f"/task/{task_id}/retry")
    assert r.status_code == 200 and r.json["attempts"] == 0
    done = wait_for(lambda: (t := client.get(f"/task/{task_id}").json)["status"] == "done" and t)
    assert done["attempts"] == 1 and done["result"] == "again"
    assert done["last_error"] == failed["error"]  # the reason it had failed, until an attempt fails anew


def test_a_bulk_cancel_stops_running_tasks(client, conn, processes):
    ids = [enqueue(conn, "effect", {"seconds": 60}) for _ in range(2)]
    processes.start("handler.py")
    wait_for(lambda: query(conn, "SELECT count(*) FROM tasks WHERE status = 'running'")[0][0] >= 1)
    r = client.post("/task/bulk/cancel", json={"type": "effect"})
    assert r.status_code == 200 and r.json == {"cancelled": 2}
    wait_for(lambda: all(client.get(f"/task/{i}").json["status"] == "cancelled" for i in ids), timeout=30)


# -- bulk actions ------------------------------------------------------------------------------------


def statuses(conn) -> dict[str, str]:
    return dict(query(conn, "SELECT id::text, status FROM tasks"))


def test_bulk_cancel_takes_the_listings_filters(make_app, conn):
    api = make_app().test_client()
    adds = [enqueue(conn, "add", {"x": i, "y": 0}) for i in range(3)]
    noop = enqueue(conn, "noop")
    running = enqueue(conn, "add", {"x": 9, "y": 0})
    query(conn, "UPDATE tasks SET status = 'running', claim_token = gen_random_uuid() WHERE id = %s", (running,))
    done = failed_task(conn, "add", status="done")
    r = api.post("/task/bulk/cancel", json={"type": "add"})
    assert r.status_code == 200 and r.json == {"cancelled": 4}
    now = statuses(conn)
    assert [now[i] for i in adds] == ["cancelled"] * 3 and now[noop] == "waiting" and now[done] == "done"
    assert now[running] == "running"  # asked to stop: its handler ends it
    assert query(conn, "SELECT cancel_requested FROM tasks WHERE id = %s", (running,))[0][0] is True
    # Nothing left to cancel there; again, the rest.
    assert api.post("/task/bulk/cancel", json={"type": ["add"], "status": "waiting,running"}).json == {"cancelled": 0}
    assert api.post("/task/bulk/cancel", json={"all": True}).json == {"cancelled": 1}


def test_bulk_retry_takes_the_listings_filters(make_app, conn):
    api = make_app().test_client()
    old = failed_task(conn, created="2020-01-01T00:00:00Z")
    new = [failed_task(conn) for _ in range(3)]
    cancelled = failed_task(conn, "noop", status="cancelled")
    peers = failed_task(conn, peer="far")
    r = api.post("/task/bulk/retry", json={"status": "failed", "since": "2024-01-01"})
    assert r.status_code == 200 and r.json == {"retried": 3}
    now = statuses(conn)
    assert [now[i] for i in new] == ["waiting"] * 3 and now[old] == "failed" and now[cancelled] == "cancelled"
    assert now[peers] == "failed"
    assert retried_counts(conn) == {"boom": 3}
    assert api.post("/task/bulk/retry", json={"all": True}).json == {"retried": 2}  # old and cancelled
    assert retried_counts(conn) == {"boom": 4, "noop": 1}
    assert statuses(conn)[peers] == "failed"


def test_bulk_actions_work_in_batches(make_app, conn, monkeypatch):
    monkeypatch.setattr(actions, "BATCH", 7)
    api = make_app().test_client()
    ids = [failed_task(conn) for _ in range(30)]
    assert api.post("/task/bulk/retry", json={"type": "boom"}).json == {"retried": 30}
    assert api.post("/task/bulk/cancel", json={"type": "boom"}).json == {"cancelled": 30}
    assert set(statuses(conn).values()) == {"cancelled"} and len(ids) == 30
    assert retried_counts(conn) == {"boom": 30}


def test_a_bulk_action_leaves_tasks_created_after_it_began(conn):
    for _ in range(5):
        enqueue(conn, "noop")
    began = query(conn, "SELECT now() - interval '1 hour'")[0][0]  # as if the action began an hour ago
    params = {**listing.Filters().params(), "action": "cancel", "status": "waiting", "type": "noop", "batch": 100}
    params |= {"started": began, "after_created": None, "after_id": None}
    picked, left, _, _, _, started = db.run(conn, "pick_batch", params)[0]
    assert (picked, left, started) == ([], False, began)
    params["started"] = None  # the first batch: now, which it gives back for the next ones
    picked, left, _, _, _, started = db.run(conn, "pick_batch", params)[0]
    assert (len(picked), left) == (5, False) and started > began


def test_a_bulk_action_waits_for_rows_a_handler_holds(conn, settings, monkeypatch):
    monkeypatch.setattr(actions, "BATCH", 2)
    ids = [enqueue(conn, "noop") for _ in range(5)]
    holder = db.connect(settings.database_url, "holder")
    holder.autocommit = False
    with holder.cursor() as cur:
        cur.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (ids[2],))  # one in the middle
    threading.Timer(0.5, holder.commit).start()  # the lock lasts half a second, as a slow claim might
    begun = time.monotonic()
    assert actions.cancel_matching(conn, listing.parse_filters({"type": "noop"}), 60.0) == 5
    assert time.monotonic() - begun >= 0.4
    holder.close()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "needs a filter"),
        ({"all": False}, "needs a filter"),
        ({"all": "yes"}, "[all]"),
        ({"status": "nope"}, "[status]"),
        ({"status": []}, "[status]"),
        ({"status": ["failed", 3]}, "[status]"),
        ({"type": {"a": 1}}, "[type]"),
        ({"since": True}, "[since]"),
        ({"since": float("1e300")}, "[since]"),
        ({"until": "later"}, "[until]"),
        ({"limit": 5}, "[limit]"),
        ({"cursor": "x"}, "[cursor]"),
        ({"peer": 7}, "[peer]"),
        ([], "JSON object"),
        ("failed", "JSON object"),
    ],
)
def test_a_bad_bulk_body_is_400(make_app, conn, body, named):
    api = make_app().test_client()
    enqueue(conn, "noop")
    for path in ("/task/bulk/cancel", "/task/bulk/retry"):
        assert named in assert_error(api.post(path, json=body), 400)
    assert set(statuses(conn).values()) == {"waiting"}


def test_a_bulk_action_needs_a_json_body(make_app):
    api = make_app().test_client()
    assert_error(api.post("/task/bulk/cancel"), 415)
    assert_error(api.post("/task/bulk/retry", data="{", content_type="application/json"), 400)
    assert_error(api.get("/task/bulk/cancel"), 405)
    assert_error(api.get("/task/bulk"), 404)  # GET /task/<task_id>: no task has that id


# -- purge -------------------------------------------------------------------------------------------


def test_purge_deletes_finished_tasks_matching(conn):
    waiting = enqueue(conn, "noop")
    done = failed_task(conn, "noop", status="done")
    failed = failed_task(conn)
    delivering = failed_task(conn, notify_url="http://127.0.0.1:9/", notify_status="pending")
    assert actions.purge(conn, listing.parse_filters({"type": "noop"})) == 1
    assert set(statuses(conn)) == {waiting, failed, delivering}
    assert actions.purge(conn, listing.Filters()) == 1  # failed; not the one whose delivery is pending
    assert set(statuses(conn)) == {waiting, delivering}
    with pytest.raises(ApiError) as refused:
        actions.purge(conn, listing.parse_filters({"status": "done,running"}))
    assert refused.value.status == 400 and "running" in refused.value.message
    assert done not in statuses(conn)


# -- the API document says what these routes answer ---------------------------------------------------


def test_every_answer_of_the_listing_and_the_actions_is_documented(make_app, conn):
    from tests.test_openapi import assert_documented, get_document

    app = make_app(operator_password=PASSWORD)
    api = app.test_client()
    document = get_document(api)
    alice = bearer(get_token(api, "alice", add_client(app, "alice")))
    ops = basic(PASSWORD)
    failed = failed_task(conn)
    waiting = enqueue(conn, "noop")

    def documented(method: str, path: str, response) -> None:
        assert_documented(document, method, path, response)

    for headers in (ops, alice, {}, basic("wrong"), {"Authorization": "Bearer nonsense"}):
        documented("GET", "/task", api.get("/task?limit=1", headers=headers))
    documented("GET", "/task", api.get("/task?subject=bob", headers=alice))
    documented("GET", "/task", api.get("/task?status=nope", headers=ops))
    documented("GET", "/task", api.get("/task", headers={**ops, "Origin": "https://evil.example"}))
    for task_id in (failed, waiting, str(uuid.uuid4()), "nope"):
        documented("POST", "/task/{task_id}/retry", api.post(f"/task/{task_id}/retry", headers=ops))
    documented("POST", "/task/{task_id}/retry", api.post(f"/task/{waiting}/retry", headers=basic("wrong")))
    for path in ("/task/bulk/cancel", "/task/bulk/retry"):
        for body, headers in (
            ({"all": True}, ops),
            ({"type": "noop"}, ops),
            ({}, ops),
            ({"all": True}, alice),
            ({"all": True}, {}),
            ({"all": True}, {**ops, "Origin": "https://evil.example"}),
        ):
            documented("POST", path, api.post(path, json=body, headers=headers))
        documented("POST", path, api.post(path, data="x", content_type="text/plain", headers=ops))
    schema = document["paths"]["/task/bulk/cancel"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    from tests.test_openapi import validator

    check = validator(document, schema)
    assert check.is_valid({"status": ["failed", "cancelled"], "since": 1700000000, "all": False})
    assert not check.is_valid({"limit": 5})


def test_a_bulk_filter_that_postgresql_cannot_hold_is_400(make_app, conn):
    api = make_app().test_client()
    r = api.post("/task/bulk/cancel", data='{"type": "\\ud800"}', content_type="application/json")
    assert "[type]" in assert_error(r, 400)
    r = api.post("/task/bulk/cancel", data='{"subject": "a\\u0000"}', content_type="application/json")
    assert "[subject]" in assert_error(r, 400)


def test_an_operator_reads_and_cancels_any_task_as_its_poster_may(make_app, conn):
    """GET /task/<id> and its cancel follow the retry's rule: the dashboard's links and buttons work for an operator."""
    app = make_app(operator_password=PASSWORD)
    api = app.test_client()
    carols = enqueue(conn, "noop")
    query(conn, "UPDATE tasks SET subject = 'carol' WHERE id = %s", (carols,))
    bob = bearer(get_token(api, "bob", add_client(app, "bob")))
    for who in ({}, bob):  # nobody, or another subject: as if it did not exist
        assert_error(api.get(f"/task/{carols}", headers=who, environ_base=REMOTE), 404)
        assert_error(api.post(f"/task/{carols}/cancel", headers=who, environ_base=REMOTE), 404)
    assert_error(api.get(f"/task/{carols}", headers=basic("wrong")), 401)
    assert api.get(f"/task/{carols}", headers=basic(PASSWORD), environ_base=REMOTE).json["status"] == "waiting"
    cancelled = api.post(f"/task/{carols}/cancel", headers=basic(PASSWORD), environ_base=REMOTE)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    ops = operator_token(app)
    assert api.get(f"/task/{carols}", headers=ops, environ_base=REMOTE).json["status"] == "cancelled"
