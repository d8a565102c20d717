"""notify_url: a finished task is POSTed to its client, signed, retried until a 2xx; refused addresses never reached."""

from __future__ import annotations

import json

import pytest
import standardwebhooks

from tests.conftest import query, same_as_get, wait_for
from tests.helpers import Receiver, app_with


def post(client, url: str, **task: object) -> dict:
    body = {"type": "add", "args": {"x": 1, "y": 2}, "notify_url": url, **task}
    response = client.post("/task", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def notify_of(client, task_id: str) -> dict:
    return client.get(f"/task/{task_id}").get_json()["notify"]


def ended(client, task_id: str) -> dict | None:
    notify = notify_of(client, task_id)
    return notify if notify["status"] != "pending" else None


def test_the_finished_task_is_posted_signed_as_get_shows_it(
    notify_client, processes, tmp_path, notify_env, webhook_secret
):
    receiver = Receiver(processes, tmp_path)
    posted = post(notify_client, receiver.url)
    assert posted["notify"] == {
        "url": receiver.url,
        "status": "pending",
        "attempts": 0,
        "last_status": None,
        "last_error": None,
    }
    same_as_get(posted, notify_client.get(f"/task/{posted['id']}").get_json())  # the same JSON text, key order too
    processes.start("handler.py", **notify_env)
    notify = wait_for(lambda: ended(notify_client, posted["id"]))
    assert notify == {"url": receiver.url, "status": "delivered", "attempts": 1, "last_status": 200, "last_error": None}
    [request] = receiver.requests()
    # Signed as Standard Webhooks specify: the reference library verifies it.
    delivered = standardwebhooks.Webhook(webhook_secret).verify(request["body"], request["headers"])
    task = notify_client.get(f"/task/{posted['id']}").get_json()
    assert delivered["status"] == "done" and delivered["result"] == 3
    assert {k: v for k, v in delivered.items() if k != "notify"} == {k: v for k, v in task.items() if k != "notify"}
    assert request["headers"]["webhook-id"] == "msg_" + posted["id"].replace("-", "")


def test_a_dead_receiver_fails_the_delivery_after_max_attempts(notify_client, processes, tmp_path, notify_env):
    receiver = Receiver(processes, tmp_path)
    receiver.proc.kill()
    receiver.proc.wait()
    posted = post(notify_client, receiver.url)
    processes.start("handler.py", **notify_env, WEBHOOK_MAX_ATTEMPTS="3")
    notify = wait_for(lambda: ended(notify_client, posted["id"]))
    assert notify == {
        "url": receiver.url,
        "status": "failed",
        "attempts": 3,
        "last_status": None,
        "last_error": "connection refused",
    }
    task = notify_client.get(f"/task/{posted['id']}").get_json()
    assert task["status"] == "done" and task["result"] == 3  # the task itself is not touched


def test_a_black_hole_receiver_times_out_each_attempt(notify_client, processes, tmp_path, notify_env):
    hole = Receiver(processes, tmp_path, "--hang", "100")
    held = post(notify_client, hole.url)
    processes.start("handler.py", **{**notify_env, "WEBHOOK_MAX_ATTEMPTS": "2", "WEBHOOK_TIMEOUT": "0.5"})
    notify = wait_for(lambda: ended(notify_client, held["id"]))
    assert notify["status"] == "failed" and notify["attempts"] == 2
    assert notify["last_error"] == "timed out after 0.5 s"


def test_the_janitor_keeps_a_task_until_its_delivery_has_ended(
    base_env, registry, monkeypatch, processes, tmp_path, conn, notify_env
):
    short = {"MAX_TASK_TIME": "1", "JANITOR_INTERVAL": "0.1"}
    client = app_with(monkeypatch, {**base_env, **notify_env, **short}, registry).test_client()
    receiver = Receiver(processes, tmp_path, "--fail", "3")
    posted = post(client, receiver.url)
    processes.start("janitor.py", **short)
    processes.start("handler.py", **{**notify_env, **short, "WEBHOOK_BACKOFF": "1"})
    # The third attempt comes at least 2.25 s after the first (backoff 1 s doubling, -25% jitter at
    # most): past the task's expiry (MAX_TASK_TIME=1 from when it finished), and 3 s before the fourth.
    wait_for(lambda: len(receiver.requests()) >= 3, timeout=30)
    # Past its expiry, finished, and still here: its delivery is pending.
    sql = "SELECT status, notify_status, expire < now() FROM tasks WHERE id = %s"
    assert query(conn, sql, (posted["id"],)) == [("done", "pending", True)]
    wait_for(lambda: not query(conn, "SELECT 1 FROM tasks WHERE id = %s", (posted["id"],)), timeout=30)
    assert [r["answer"] for r in receiver.requests()] == [500, 500, 500, 200]


def test_a_cancelled_task_is_delivered_too(notify_client, processes, tmp_path, notify_env):
    receiver = Receiver(processes, tmp_path)
    posted = post(notify_client, receiver.url, delay=3600)
    assert notify_client.post(f"/task/{posted['id']}/cancel").status_code == 200
    processes.start("handler.py", **notify_env)
    wait_for(lambda: ended(notify_client, posted["id"]))
    [request] = receiver.requests()
    assert json.loads(request["body"])["status"] == "cancelled"


def test_bulk_items_take_a_notify_url_each(notify_client, processes, tmp_path, notify_env):
    receiver = Receiver(processes, tmp_path)
    bodies = [{"type": "add", "args": {"x": i, "y": 0}, "notify_url": receiver.url} for i in range(5)]
    answer = notify_client.post("/task", json=[*bodies, {"type": "add", "args": {"x": 9, "y": 0}}]).get_json()
    assert [task["notify"] is not None for task in answer] == [True] * 5 + [False]
    processes.start("handler.py", **notify_env)
    wait_for(lambda: len(receiver.requests()) == 5)
    assert sorted(json.loads(r["body"])["result"] for r in receiver.requests()) == [0, 1, 2, 3, 4]


# -- refused at request time: no handler runs, so nothing is ever sent -----------------------------


def test_without_a_secret_notify_url_is_a_clear_400(client):
    response = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}, "notify_url": "http://a.b/"})
    assert response.status_code == 400
    assert "WEBHOOK_SECRET" in response.get_json()["message"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://100.64.0.1/", "shared"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "IPv4"),
        ("http://[64:ff9b::a00:1]/", "NAT64"),
        ("http://2130706433/", "non-standard form"),
        ("http://0x7f000001/", "non-standard form"),
        ("http://0177.0.0.1/", "non-standard form"),
        ("http://localhost/", "loopback"),
        ("ftp://example.com/", "http"),
        ("http://user:pw@example.com/", "user"),
    ],
)
def test_unsafe_notify_urls_are_refused_at_request_time(
    base_env, registry, monkeypatch, conn, url, reason, webhook_secret
):
    client = app_with(monkeypatch, {**base_env, "WEBHOOK_SECRET": webhook_secret}, registry).test_client()
    response = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}, "notify_url": url})
    assert response.status_code == 400, response.get_json()
    message = response.get_json()["message"]
    assert message.startswith("the field [notify_url] is refused: ") and reason.lower() in message.lower(), message
    assert query(conn, "SELECT count(*) FROM tasks") == [(0,)]  # nothing stored
