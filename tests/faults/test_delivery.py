"""Deliveries to notify_url and tasks on a peer server, under faults: failing and killed receivers, killed handlers."""

from __future__ import annotations

import json
import signal

from tests.conftest import wait_for
from tests.helpers import Receiver
from tests.test_notify import ended, post
from tests.test_peers import post_a


def test_a_receiver_that_fails_twice_gets_3_attempts_with_one_webhook_id(
    notify_client, processes, tmp_path, report, notify_env
):
    receiver = Receiver(processes, tmp_path, "--fail", "2")
    posted = post(notify_client, receiver.url)
    processes.start("handler.py", **notify_env)
    notify = wait_for(lambda: ended(notify_client, posted["id"]))
    assert notify["status"] == "delivered" and notify["attempts"] == 3 and notify["last_status"] == 200
    requests = receiver.requests()
    assert [r["answer"] for r in requests] == [500, 500, 200]  # delivered once
    assert len({r["headers"]["webhook-id"] for r in requests}) == 1
    report("attempts", len(requests))


def test_a_receiver_killed_mid_delivery_gets_it_when_back(notify_client, processes, tmp_path, report, notify_env):
    receiver = Receiver(processes, tmp_path, "--hang", "1")
    posted = post(notify_client, receiver.url)
    processes.start("handler.py", **notify_env)
    wait_for(lambda: receiver.requests())  # the first attempt is under way, unanswered
    receiver.proc.send_signal(signal.SIGKILL)
    receiver.proc.wait()
    receiver.start()  # the same port, answering 200 now
    notify = wait_for(lambda: ended(notify_client, posted["id"]))
    assert notify["status"] == "delivered" and notify["attempts"] >= 2
    requests = receiver.requests()
    assert [r["answer"] for r in requests][-1] == 200 and [r["answer"] for r in requests].count(200) == 1
    assert len({r["headers"]["webhook-id"] for r in requests}) == 1
    report("attempts", notify["attempts"])


def test_a_handler_killed_while_delivering_is_made_up_for_by_another(
    notify_client, processes, tmp_path, report, notify_env
):
    """SIGKILL the handler between finishing the task and delivering it: the delivery's lease runs out and
    another handler delivers it, with the same webhook-id."""
    receiver = Receiver(processes, tmp_path, "--hang", "1")
    posted = post(notify_client, receiver.url)
    first = processes.start("handler.py", **notify_env)
    wait_for(lambda: receiver.requests())
    task = notify_client.get(f"/task/{posted['id']}").get_json()
    assert task["status"] == "done" and task["notify"]["status"] == "pending"
    first.send_signal(signal.SIGKILL)
    first.wait()
    processes.start("handler.py", **notify_env)
    notify = wait_for(lambda: ended(notify_client, posted["id"]), timeout=60)
    assert notify["status"] == "delivered" and notify["attempts"] == 2
    requests = receiver.requests()
    assert [r["answer"] for r in requests] == [None, 200]
    assert requests[0]["headers"]["webhook-id"] == requests[1]["headers"]["webhook-id"]
    assert json.loads(requests[1]["body"])["result"] == 3


def test_a_peer_killed_while_running_a_forwarded_task(pair, processes, report):
    """SIGKILL the peer's handler mid-task: the peer rescues it, runs it again, and calls back."""
    pair.start_b(LEASE_SECONDS="1.5")
    pair.start_a()
    posted = post_a(pair, type="sleep", args={"seconds": 2})
    wait_for(lambda: pair.tasks_b() and pair.tasks_b()[0][1] == "running")
    victim = pair.b_procs[1]  # B's handler
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    processes.start("handler.py", **{**pair.env_b, "LEASE_SECONDS": "1.5"})
    task = wait_for(lambda: pair.ended_a(posted["id"]), timeout=60)
    assert task["status"] == "done" and task["result"] == 2
    assert pair.tasks_b() == [(posted["id"], "done", 2)]  # ran there again after its rescue, once more
    report("attempts on the peer", 2)
