"""Queue semantics: retries with backoff, timeouts, isolation, priorities, delays, cancellation, idempotency."""

from __future__ import annotations

import dataclasses
import time

import pytest

from flask_tasks import db
from flask_tasks.db import retry_delay
from flask_tasks.execution import InProcessRunner
from flask_tasks.handler import Handler
from tests.conftest import claim, enqueue, query, wait_for


def task_row(conn, task_id: str) -> dict:
    return db.run_dicts(conn, "get_task", {"id": task_id, "subject": None, "operator": True})[0]


def finished(conn, task_id: str) -> dict | None:
    row = task_row(conn, task_id)
    return row if row["status"] in ("done", "failed", "cancelled") else None


# -- retries --------------------------------------------------------------------


def test_an_exception_is_retried_until_it_succeeds(conn, processes):
    task_id = enqueue(conn, "flaky", {"key": "k", "failures": 2})
    handler = processes.start("handler.py")
    row = wait_for(lambda: finished(conn, task_id))
    assert row["status"] == "done" and row["result"] == 3 and row["attempts"] == 3
    assert row["error"] is None
    assert row["last_error"]["message"] == "ValueError: failure 2 of 2"
    assert [k for (k,) in query(conn, "SELECT key FROM side_effects ORDER BY key")] == ["k/1", "k/2", "k/3"]
    assert "(flaky, attempt 1) waiting in" in processes.output(handler)


def test_retries_run_out_and_the_task_fails(conn, processes):
    task_id = enqueue(conn, "flaky", {"key": "k", "failures": 5}, max_attempts=2)
    processes.start("handler.py")
    row = wait_for(lambda: finished(conn, task_id))
    assert row["status"] == "failed" and row["attempts"] == 2
    assert row["error"]["message"] == "ValueError: failure 2 of 5"
    assert "Traceback" in row["error"]["traceback"]


def test_a_retry_waits_for_its_backoff(conn, settings, registry):
    task_id = enqueue(conn, "boom", max_attempts=3)
    handler = Handler(dataclasses.replace(settings, retry_backoff=30.0), registry)
    handler.runner = InProcessRunner()
    [claimed] = claim(handler)
    handler._finish(claimed, handler._execute(claimed), 0.0, 0.0)
    handler._exchange(handler._db(), handler.outbox, 0)
    row = task_row(conn, task_id)
    assert row["status"] == "waiting" and row["attempts"] == 1
    assert 30 * 0.75 - 1 <= row["run_at"] - time.time() <= 30 * 1.25 + 1
    assert claim(handler) == []  # not due yet
    handler.db.drop()


def test_retry_delay_grows_exponentially_with_jitter():
    for attempt in range(1, 8):
        delays = [retry_delay(attempt, 1.0) for _ in range(200)]
        assert 0.75 * 2 ** (attempt - 1) <= min(delays) <= max(delays) <= 1.25 * 2 ** (attempt - 1)
        assert len(set(delays)) > 100  # jittered, not fixed
    assert retry_delay(40, 1.0) <= 3600 * 1.25  # capped


def test_max_attempts_and_timeout_come_from_request_then_type_then_settings(client):
    def post(**options):
        return client.post("/task", json={"type": "slow", "args": {"seconds": 1}, **options}).json

    assert (post()["max_attempts"], post()["timeout"]) == (1, 0.3)  # the decorator's
    assert (post(max_attempts=4, timeout=2)["max_attempts"], post(timeout=2)["timeout"]) == (4, 2.0)
    plain = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}}).json
    assert (plain["max_attempts"], plain["timeout"]) == (3, None)  # MAX_ATTEMPTS and no TASK_TIMEOUT


# -- timeouts and isolation -------------------------------------------------------


def test_timeouts_fail_the_task_and_the_handler_goes_on(conn, processes):
    by_type = enqueue(conn, "slow", {"seconds": 5})  # the type allows 0.3 s
    by_request = enqueue(conn, "sleep", {"seconds": 5}, timeout=0.3, max_attempts=1)
    after = enqueue(conn, "add", {"x": 1, "y": 2})
    handler = processes.start("handler.py")
    for task_id, limit in ((by_type, "0.3"), (by_request, "0.3")):
        row = wait_for(lambda t=task_id: finished(conn, t), timeout=10)
        assert row["status"] == "failed"
        assert row["error"]["message"] == f"timeout: the task ran longer than its {limit} s"
    assert wait_for(lambda: finished(conn, after))["result"] == 3
    assert handler.poll() is None


@pytest.mark.parametrize(
    ("type_name", "args", "message"),
    [
        ("segfault", {}, "the isolated process was killed by SIGSEGV"),
        ("hard_exit", {"code": 3}, "the isolated process exited with code 3 before returning a result"),
        ("eat_memory", {"megabytes": 2000}, "MemoryError"),
        ("spin", {}, "timeout: the task ran longer than its 0.5 s"),
    ],
)
def test_an_isolated_task_failing_hard_fails_only_itself(conn, processes, type_name, args, message):
    task_id = enqueue(conn, type_name, args)
    after = enqueue(conn, "add", {"x": 2, "y": 2})
    handler = processes.start("handler.py")
    row = wait_for(lambda: finished(conn, task_id), timeout=20)
    assert row["status"] == "failed" and row["error"]["message"].startswith(message), row["error"]
    assert wait_for(lambda: finished(conn, after))["result"] == 4
    assert handler.poll() is None


def test_an_isolated_task_runs_in_a_child_and_returns_its_result(conn, processes):
    task_id = enqueue(conn, "isolated_sleep", {"seconds": 0})
    handler = processes.start("handler.py")
    row = wait_for(lambda: finished(conn, task_id))
    assert row["status"] == "done"
    assert row["result"]["parent"] == handler.pid and row["result"]["pid"] != handler.pid


# -- priorities and delays --------------------------------------------------------------


def test_higher_priority_is_claimed_first(conn, settings, registry):
    low = enqueue(conn, "add", {"x": 1, "y": 1}, priority=-5)
    normal = enqueue(conn, "add", {"x": 1, "y": 1})
    high = enqueue(conn, "add", {"x": 1, "y": 1}, priority=10)
    handler = Handler(settings, registry)
    order = [str(claimed.id) for claimed in claim(handler)]
    assert order == [high, normal, low]
    handler.db.drop()


def test_a_delayed_task_waits_until_it_is_due(conn, client, settings, registry):
    delayed = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 1}, "delay": 1.5}).json
    assert delayed["run_at"] - delayed["created"] in (1, 2)
    assert delayed["expire"] == delayed["run_at"] + settings.max_task_time
    at = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 1}, "run_at": time.time() + 60}).json
    assert at["run_at"] >= time.time() + 58
    handler = Handler(settings, registry)
    assert claim(handler) == []
    time.sleep(1.6)
    assert [str(c.id) for c in claim(handler)] == [delayed["id"]]
    handler.db.drop()


def test_run_at_and_delay_together_are_refused(client, conn):
    body = {"type": "add", "args": {"x": 1, "y": 1}, "delay": 1, "run_at": time.time()}
    response = client.post("/task", json=body)
    assert response.status_code == 400 and response.json == {"message": "give run_at or delay, not both."}
    assert query(conn, "SELECT count(*) FROM tasks") == [(0,)]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("priority", 1.5),
        ("priority", 5000),
        ("delay", -1),
        ("max_attempts", 0),
        ("timeout", 0),
        ("idempotency_key", ""),
    ],
)
def test_bad_options_are_400(client, conn, option, value):
    response = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 1}, option: value})
    assert response.status_code == 400 and response.json["message"].startswith(f"the field [{option}] is invalid")
    assert query(conn, "SELECT count(*) FROM tasks") == [(0,)]


# -- cancellation --------------------------------------------------------------------


def test_cancel_a_waiting_task(client):
    task = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 1}, "delay": 60}).json
    response = client.post(f"/task/{task['id']}/cancel")
    assert response.status_code == 200
    assert response.json["status"] == "cancelled" and response.json["finished"] is not None
    again = client.post(f"/task/{task['id']}/cancel")
    assert again.status_code == 409
    assert again.json == {"message": f"task [{task['id']}] has already finished: it is cancelled"}


def test_cancel_unknown_or_finished_tasks(client, conn):
    assert client.post("/task/0b3c7f0e-0000-4000-8000-000000000000/cancel").status_code == 404
    assert client.post("/task/nope/cancel").status_code == 404
    task_id = enqueue(conn, "add", {"x": 1, "y": 1})
    query(conn, "UPDATE tasks SET status = 'done'")
    assert client.post(f"/task/{task_id}/cancel").status_code == 409


@pytest.mark.parametrize("type_name", ["sleep", "isolated_sleep"])
def test_cancel_a_running_task(conn, client, processes, type_name):
    task_id = enqueue(conn, type_name, {"seconds": 30})
    after = enqueue(conn, "add", {"x": 1, "y": 1})
    handler = processes.start("handler.py")
    wait_for(lambda: task_row(conn, task_id)["status"] == "running")
    response = client.post(f"/task/{task_id}/cancel")
    assert response.status_code == 200
    assert response.json["status"] == "running" and response.json["cancel_requested"] is True
    started = time.monotonic()
    row = wait_for(lambda: finished(conn, task_id), timeout=10)
    assert time.monotonic() - started < 5
    assert row["status"] == "cancelled" and row["error"]["message"].startswith("cancelled")
    assert wait_for(lambda: finished(conn, after))["result"] == 2
    assert handler.poll() is None


# -- idempotency ------------------------------------------------------------------


def test_the_same_idempotency_key_returns_the_first_task(client, conn):
    body = {"type": "add", "args": {"x": 1, "y": 2}, "idempotency_key": "order-42"}
    first = client.post("/task", json=body)
    second = client.post("/task", json=body)
    other = client.post("/task", json={**body, "idempotency_key": "order-43"})
    assert (first.status_code, second.status_code, other.status_code) == (201, 200, 201)
    assert second.json["id"] == first.json["id"] and second.json["args"] == {"x": 1, "y": 2}
    assert other.json["id"] != first.json["id"]
    assert query(conn, "SELECT count(*) FROM tasks") == [(2,)]


def test_a_task_that_swallows_its_timeout_is_interrupted_again(conn, processes):
    task_id = enqueue(conn, "stubborn", {"seconds": 5}, timeout=0.3)
    processes.start("handler.py")
    row = wait_for(lambda: finished(conn, task_id), timeout=10)
    assert row["status"] == "failed" and row["error"]["message"].startswith("timeout")


def test_a_result_too_deep_for_json_fails_the_task_not_the_handler(conn, processes):
    task_id = enqueue(conn, "deep")
    after = enqueue(conn, "add", {"x": 1, "y": 1})
    handler = processes.start("handler.py")
    row = wait_for(lambda: finished(conn, task_id))
    assert row["status"] == "failed" and "not JSON-serialisable" in row["error"]["message"]
    assert wait_for(lambda: finished(conn, after))["result"] == 2
    assert handler.poll() is None


def test_a_cancel_that_comes_before_a_retry_ends_the_task(conn, settings, registry):
    task_id = enqueue(conn, "boom", max_attempts=3)
    handler = Handler(settings, registry)
    handler.runner = InProcessRunner()
    [claimed] = claim(handler)
    query(conn, "UPDATE tasks SET cancel_requested = true")
    handler._finish(claimed, handler._execute(claimed), 0.0, 0.0)
    handler._exchange(handler._db(), handler.outbox, 0)
    row = task_row(conn, task_id)
    assert row["status"] == "cancelled" and row["attempts"] == 1
    handler.db.drop()


def test_a_handler_busy_with_a_long_task_gives_back_the_rest(conn, processes):
    ids = [enqueue(conn, "sleep", {"seconds": 2.5}) for _ in range(2)]
    first = processes.start("handler.py", WORKER_NAME="first")
    wait_for(lambda: query(conn, "SELECT count(*) FROM tasks WHERE worker = 'first'")[0][0] == 2)
    processes.start("handler.py", WORKER_NAME="second")
    rows = [wait_for(lambda i=i: finished(conn, i), timeout=15) for i in ids]
    assert {row["worker"] for row in rows} == {"first", "second"}
    assert all(row["status"] == "done" and row["attempts"] == 1 for row in rows)
    assert "gave back 1 tasks it had not started" in processes.output(first)


def test_an_interrupt_inside_logging_leaves_no_lock_held():
    """A timeout raised while the task holds a logging handler's lock must not leave it held."""
    import io
    import logging
    import threading

    handler = logging.StreamHandler(io.StringIO())
    chatty = logging.getLogger("tests.chatty")
    chatty.addHandler(handler)
    chatty.propagate = False

    def task() -> None:
        while True:
            chatty.warning("working")

    def lock_is_free() -> bool:
        free: list[bool] = []

        def probe() -> None:  # another thread, as the handler's database thread would be
            if handler.lock.acquire(timeout=1):
                handler.lock.release()
                free.append(True)

        thread = threading.Thread(target=probe)
        thread.start()
        thread.join()
        return free == [True]

    runner = InProcessRunner()
    try:
        for _ in range(100):
            assert runner.run(task, {}, 0.003, lambda: False).kind == "timeout"
            assert lock_is_free()
    finally:
        chatty.removeHandler(handler)
