"""Peer servers: two real flask-tasks servers (gunicorn, handlers, a database each) sending tasks to each other."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from openapi_spec_validator import validate

from flask_tasks.webhooks import generate_secret, parse_secret, signed_headers
from tests.conftest import same_as_get, wait_for
from tests.helpers import LiveClient, Pair, free_port, http, start_web
from tests.test_openapi import body_schema, validator


def post_a(pair: Pair, **task: object) -> dict:
    status, answer = http("POST", f"{pair.a}/task", {"type": "add", "args": {"x": 2, "y": 3}, "peer": "b", **task})
    assert status == 201, answer
    return answer


def test_a_task_sent_to_a_peer_runs_there_and_ends_here(pair):
    pair.start_b()
    pair.start_a()
    posted = post_a(pair)
    assert posted["peer"] == {"name": "b", "task_id": None} and posted["status"] == "waiting"
    task = wait_for(lambda: pair.ended_a(posted["id"]))
    assert task["status"] == "done" and task["result"] == 5
    assert task["peer"]["name"] == "b" and task["peer"]["task_id"] is not None
    assert pair.tasks_b() == [(posted["id"], "done", 1)]  # our id is its idempotency key there


def test_the_peer_down_while_sending_is_retried_and_the_task_runs_there_once(pair):
    pair.start_a()
    posted = post_a(pair)
    waiting = wait_for(lambda: (t := pair.task_a(posted["id"]))["last_error"] and t)
    assert waiting["status"] == "waiting" and "peer b unreachable" in waiting["last_error"]["message"]
    pair.start_b()
    task = wait_for(lambda: pair.ended_a(posted["id"]))
    assert task["status"] == "done" and task["result"] == 5
    assert pair.tasks_b() == [(posted["id"], "done", 1)]


def test_a_task_the_peer_refuses_fails_here_with_its_message(pair):
    pair.start_b()
    pair.start_a()
    posted = post_a(pair, type="no_such_type", args={})
    task = wait_for(lambda: pair.ended_a(posted["id"]))
    assert task["status"] == "failed"
    assert task["error"]["message"] == "peer b refused the task: task type [no_such_type] doesnt exist"
    assert pair.tasks_b() == []


def test_a_lost_callback_is_made_up_for_by_asking_the_peer(pair):
    pair.start_b()
    # The callbacks go to a port where nobody listens: only asking the peer can end the task here.
    pair.start_a(PUBLIC_URL=f"http://127.0.0.1:{free_port()}", PEER_CHECK_INTERVAL="1")
    posted = post_a(pair)
    task = wait_for(lambda: pair.ended_a(posted["id"]))
    assert task["status"] == "done" and task["result"] == 5


def test_a_cancel_here_cancels_the_task_there(pair):
    pair.start_b()
    pair.start_a()
    posted = post_a(pair, type="sleep", args={"seconds": 60})
    wait_for(lambda: pair.tasks_b() and pair.tasks_b()[0][1] == "running")
    assert http("POST", f"{pair.a}/task/{posted['id']}/cancel")[0] == 200
    task = wait_for(lambda: pair.ended_a(posted["id"]))
    assert task["status"] == "cancelled"
    assert pair.tasks_b() == [(posted["id"], "cancelled", 1)]


# -- the callback endpoint: signed by the peer, from the peer's task for ours, once, and recent ------------


def callback(client, secret: str, task_id: str, peer_task_id: str, timestamp: int | None = None, **task: object):
    body = {"id": peer_task_id, "idempotency_key": task_id, "status": "done", "result": 42, "error": None, **task}
    raw = json.dumps(body).encode()
    headers = signed_headers(parse_secret(secret), f"msg_{peer_task_id.replace('-', '')}", raw, timestamp)
    return client.post("/peer/b/callback", data=raw, headers=headers)


@pytest.fixture
def sent(pair):
    """A task of A's running on B (a long sleep), and a client of A: (client, task as A shows it)."""
    pair.start_b()
    pair.start_a()
    client = LiveClient(pair.a)
    posted = client.post("/task", json={"type": "sleep", "args": {"seconds": 60}, "peer": "b"}).get_json()
    same_as_get(posted, client.get(f"/task/{posted['id']}").get_json())  # peer shown alike in both answers
    task = wait_for(lambda: (t := client.get(f"/task/{posted['id']}").get_json())["peer"]["task_id"] and t)
    return client, task


def test_the_same_callback_twice_changes_nothing_the_second_time(pair, sent):
    client, task = sent
    first = callback(client, pair.env_b["WEBHOOK_SECRET"], task["id"], task["peer"]["task_id"])
    assert first.status_code == 200 and first.get_json()["settled"] is True
    ended = client.get(f"/task/{task['id']}").get_json()
    assert ended["status"] == "done" and ended["result"] == 42
    again = callback(client, pair.env_b["WEBHOOK_SECRET"], task["id"], task["peer"]["task_id"], result=43)
    assert again.status_code == 200 and again.get_json()["settled"] is False
    assert client.get(f"/task/{task['id']}").get_json() == ended


def test_a_forged_replayed_or_unsigned_callback_is_refused_and_changes_nothing(pair, sent):
    client, task = sent
    forged = callback(client, generate_secret(), task["id"], task["peer"]["task_id"])
    assert forged.status_code == 401 and "not signed by peer [b]" in forged.get_json()["message"]
    old = int(time.time()) - 400  # signed with the right secret, but more than 5 minutes ago
    replayed = callback(client, pair.env_b["WEBHOOK_SECRET"], task["id"], task["peer"]["task_id"], timestamp=old)
    assert replayed.status_code == 401
    unsigned = client.post("/peer/b/callback", json={"idempotency_key": task["id"], "status": "done"})
    assert unsigned.status_code == 401
    assert client.post("/peer/nobody/callback", json={}).status_code == 401  # no peer of that name: the same
    assert client.get(f"/task/{task['id']}").get_json()["status"] == "running"


def test_only_the_peers_own_task_for_ours_ends_it(pair, sent):
    """Any client of B can post a task there with our id as its key and our callback as its notify_url,
    and B signs every callback: only the task B made when we sent ours may end ours."""
    client, task = sent
    other = callback(client, pair.env_b["WEBHOOK_SECRET"], task["id"], str(uuid.uuid4()))
    assert other.status_code == 200 and other.get_json()["settled"] is False
    local = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 1}, "delay": 3600}).get_json()
    not_a_peer_task = callback(client, pair.env_b["WEBHOOK_SECRET"], local["id"], task["peer"]["task_id"])
    assert not_a_peer_task.get_json()["settled"] is False
    assert client.get(f"/task/{task['id']}").get_json()["status"] == "running"
    assert client.get(f"/task/{local['id']}").get_json()["status"] == "waiting"
    bad = client.post(
        "/peer/b/callback",
        data=b'{"idempotency_key": 5}',
        headers=signed_headers(parse_secret(pair.env_b["WEBHOOK_SECRET"]), "msg_x", b'{"idempotency_key": 5}'),
    )
    assert bad.status_code == 400


def test_an_unknown_peer_is_a_400_at_request_time(pair):
    start_web(pair.processes, pair.port_a, pair.env_a)
    status, answer = http("POST", f"{pair.a}/task", {"type": "add", "args": {}, "peer": "c"})
    assert (status, answer["message"]) == (400, "peer [c] is not known here (PEERS)")


def test_a_protected_type_needs_a_token_here_to_be_sent_to_a_peer(pair):
    start_web(pair.processes, pair.port_a, pair.env_a)
    status, answer = http("POST", f"{pair.a}/task", {"type": "multiply", "args": {"x": 2, "y": 3}, "peer": "b"})
    assert status == 401 and "protected" in answer["message"]


def test_the_peer_task_types_own_defaults_hold_there(pair):
    """boom fails on its one attempt (its type's max_attempts=1): A's MAX_ATTEMPTS is not sent along."""
    pair.start_b()
    pair.start_a()
    posted = post_a(pair, type="boom", args={})
    task = wait_for(lambda: pair.ended_a(posted["id"]))
    assert task["status"] == "failed" and task["error"]["message"].startswith("RuntimeError")
    assert pair.tasks_b() == [(posted["id"], "failed", 1)]


def test_a_peer_down_until_the_task_expires_fails_it(pair):
    pair.start_a(MAX_TASK_TIME="3")
    posted = post_a(pair)
    task = wait_for(lambda: pair.ended_a(posted["id"]))
    assert task["status"] == "failed" and "peer b unreachable" in task["error"]["message"]


def test_the_document_of_a_server_with_peers_describes_peer_requests(pair):
    start_web(pair.processes, pair.port_a, pair.env_a)
    document = http("GET", f"{pair.a}/openapi.json")[1]
    validate(document)
    check = validator(document, body_schema(document))
    for body in ({"type": "hello_world", "args": {"username": "x"}, "peer": "b"}, {"type": "add", "peer": "b"}):
        assert check.is_valid(body), body
        assert http("POST", f"{pair.a}/task", body)[0] == 201
    assert not check.is_valid({"type": "hello_world", "peer": "c"})  # not a peer of A's
    assert not check.is_valid({"type": "hello_world", "args": {}})  # without a peer, only A's own types
