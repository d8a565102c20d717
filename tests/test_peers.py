"""Peer servers: two real flask-tasks servers (gunicorn, handlers, a database each) sending tasks to each other."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from flask_tasks.webhooks import generate_secret, parse_secret, signed_headers
from tests.conftest import same_as_get, wait_for
from tests.helpers import LiveClient, Pair, free_port, http, start_web


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


# -- the callback endpoint: signed by the peer, once, and recent ---------------------------------


def callback(client, secret: str, task_id: str, timestamp: int | None = None, **task: object):
    body = json.dumps(
        {"id": str(uuid.uuid4()), "idempotency_key": task_id, "status": "done", "result": 42, "error": None, **task}
    ).encode()
    headers = signed_headers(parse_secret(secret), f"msg_{task_id}", body, timestamp)
    return client.post("/peer/b/callback", data=body, headers=headers)


@pytest.fixture
def server_a(pair):
    """Server A under gunicorn, for its callback endpoint; its tasks stay waiting (no handler sends them)."""
    start_web(pair.processes, pair.port_a, pair.env_a)
    return LiveClient(pair.a)


def post_waiting(client) -> dict:
    response = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 1}, "peer": "b"})
    assert response.status_code == 201
    return response.get_json()


def test_the_same_callback_twice_changes_nothing_the_second_time(pair, server_a):
    task = post_waiting(server_a)
    same_as_get(task, server_a.get(f"/task/{task['id']}").get_json())  # peer shown alike in both answers
    first = callback(server_a, pair.env_b["WEBHOOK_SECRET"], task["id"])
    assert first.status_code == 200 and first.get_json()["settled"] is True
    ended = server_a.get(f"/task/{task['id']}").get_json()
    assert ended["status"] == "done" and ended["result"] == 42
    again = callback(server_a, pair.env_b["WEBHOOK_SECRET"], task["id"], result=43)
    assert again.status_code == 200 and again.get_json()["settled"] is False
    assert server_a.get(f"/task/{task['id']}").get_json() == ended


def test_a_forged_or_replayed_callback_is_refused_and_changes_nothing(pair, server_a):
    task = post_waiting(server_a)
    forged = callback(server_a, generate_secret(), task["id"])
    assert forged.status_code == 401 and "not signed by peer [b]" in forged.get_json()["message"]
    old = int(time.time()) - 400  # signed with the right secret, but more than 5 minutes ago
    replayed = callback(server_a, pair.env_b["WEBHOOK_SECRET"], task["id"], timestamp=old)
    assert replayed.status_code == 401
    unsigned = server_a.post("/peer/b/callback", json={"idempotency_key": task["id"], "status": "done"})
    assert unsigned.status_code == 401
    assert server_a.get(f"/task/{task['id']}").get_json()["status"] == "waiting"


def test_a_callback_for_an_unknown_peer_or_a_task_of_another_peer_changes_nothing(pair, server_a):
    task = post_waiting(server_a)
    unknown = server_a.post("/peer/nobody/callback", json={})
    assert unknown.status_code == 404
    local = server_a.post("/task", json={"type": "add", "args": {"x": 1, "y": 1}, "delay": 3600}).get_json()
    answer = callback(server_a, pair.env_b["WEBHOOK_SECRET"], local["id"])
    assert answer.status_code == 200 and answer.get_json()["settled"] is False  # not b's task to end
    assert server_a.get(f"/task/{local['id']}").get_json()["status"] == "waiting"
    assert server_a.get(f"/task/{task['id']}").get_json()["status"] == "waiting"


def test_an_unknown_peer_is_a_400_at_request_time(server_a):
    response = server_a.post("/task", json={"type": "add", "args": {}, "peer": "c"})
    assert response.status_code == 400
    assert response.get_json()["message"] == "peer [c] is not known; known peers: b"
