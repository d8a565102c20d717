"""Bulk enqueue: a JSON array of tasks, validated one by one, stored all or nothing, answered in order."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from flask_tasks.web import create_app
from tests.conftest import query, same_as_get


def count(conn) -> int:
    return query(conn, "SELECT count(*) FROM tasks")[0][0]


def test_an_array_of_tasks_is_stored_in_order(client, conn):
    bodies = [{"type": "add", "args": {"x": i, "y": 1}, "priority": i % 3} for i in range(50)]
    bodies.insert(10, {"required_arg": "old style"})
    response = client.post("/task/new", json=bodies)
    assert response.status_code == 201
    tasks = response.json
    assert len(tasks) == 51 and len({t["id"] for t in tasks}) == 51
    assert [t["args"] for t in tasks[:10]] == [{"x": i, "y": 1} for i in range(10)]
    assert tasks[10]["type"] == "echo" and tasks[10]["required_arg"] == "old style"
    assert [t["priority"] for t in tasks[:4]] == [0, 1, 2, 0]
    assert all(t["status"] == "waiting" and t["expire"] > t["created"] for t in tasks)
    assert count(conn) == 51
    assert client.get(f"/task/{tasks[50]['id']}").json["args"] == {"x": 49, "y": 1}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"type": "nope"}, "task [2]: task type [nope] doesnt exist"),
        ({"type": "add", "args": {"x": 1}}, "task [2]: the required param [y] was not passed."),
        (
            {"type": "add", "args": {"x": 1, "y": "2"}},
            "task [2]: the passed param [y] doesnt match the required type: [int].",
        ),
        (7, "task [2]: the request body must be a JSON object"),
        ({"type": "add", "args": {"x": 1, "y": 2}, "delay": -1}, "task [2]: the field [delay] is invalid"),
    ],
)
def test_one_bad_task_refuses_them_all(client, conn, bad, message):
    bodies = [{"type": "add", "args": {"x": 1, "y": 2}}] * 2 + [bad] + [{"type": "noop"}]
    response = client.post("/task", json=bodies)
    assert response.status_code == 400 and response.json["message"].startswith(message)
    assert count(conn) == 0


@pytest.mark.parametrize("prefer", [None, "return=minimal"])
def test_a_value_postgresql_refuses_stores_none_of_them(client, conn, prefer):
    bodies = [
        {"type": "echo", "args": {"required_arg": "fine"}},
        {"type": "echo", "args": {"required_arg": "a\u0000b"}},
    ]
    response = client.post("/task", json=bodies, headers={"Prefer": prefer} if prefer else {})
    assert response.status_code == 400 and "cannot be stored" in response.json["message"]
    assert count(conn) == 0


def test_empty_and_oversized_arrays_are_400(client, conn, app):
    assert client.post("/task", json=[]).json == {"message": "the array of tasks is empty."}
    limit = app.config["SETTINGS"].max_bulk_tasks
    response = client.post("/task", json=[{"type": "noop"}] * (limit + 1))
    assert response.status_code in (400, 413)
    assert count(conn) == 0


def test_idempotency_keys_in_a_bulk_request(client, conn):
    first = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}, "idempotency_key": "k1"}).json
    bodies = [
        {"type": "add", "args": {"x": 1, "y": 2}, "idempotency_key": "k1"},
        {"type": "add", "args": {"x": 3, "y": 4}, "idempotency_key": "k2"},
        {"type": "add", "args": {"x": 3, "y": 4}, "idempotency_key": "k2"},
    ]
    tasks = client.post("/task", json=bodies).json
    assert tasks[0]["id"] == first["id"]
    assert tasks[1]["id"] == tasks[2]["id"] != first["id"]
    assert count(conn) == 2


def test_a_reused_idempotency_key_with_another_task_is_409(client, conn):
    client.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}, "idempotency_key": "k"})
    response = client.post("/task", json={"type": "add", "args": {"x": 9, "y": 9}, "idempotency_key": "k"})
    assert response.status_code == 409
    assert response.json == {"message": "the idempotency key [k] was used for a different task"}
    nul = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}, "idempotency_key": "a\u0000b"})
    assert nul.status_code == 400
    assert count(conn) == 1


def assert_time_ordered_ids(ids: list[str], before_ms: int, after_ms: int) -> None:
    """Distinct version 7 UUIDs whose first 48 bits are a time in ms between these two."""
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before_ms <= parsed.int >> 80 <= after_ms


def test_bulk_ids_are_time_ordered_version_7_uuids(client):
    before = time.time_ns() // 1_000_000
    first = client.post("/task", json=[{"type": "add", "args": {"x": i, "y": 1}} for i in range(500)])
    time.sleep(0.002)
    second = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 1}})
    after = time.time_ns() // 1_000_000
    assert first.status_code == second.status_code == 201
    ids = [task["id"] for task in first.json]
    assert_time_ordered_ids([*ids, second.json["id"]], before, after)
    assert max(ids) < second.json["id"]  # a later request's ids sort after an earlier one's


def test_tasks_inserted_by_sql_get_time_ordered_ids_too(conn):
    now_ms = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"  # the server's clock, not ours
    before = query(conn, now_ms)[0][0]
    rows = query(
        conn, "INSERT INTO tasks (type, expire) SELECT 'add', now() FROM generate_series(1, 100) RETURNING id::text"
    )
    after = query(conn, now_ms)[0][0]
    assert_time_ordered_ids([row[0] for row in rows], before, after)


def test_a_409_in_a_bulk_request_stores_none_of_them(client, conn):
    client.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}, "idempotency_key": "k1"})
    bodies = [
        {"type": "add", "args": {"x": 100, "y": 1}},
        {"type": "add", "args": {"x": 9, "y": 9}, "idempotency_key": "k1"},
    ]
    response = client.post("/task", json=bodies)
    assert response.status_code == 409
    assert count(conn) == 1  # only the first request's task


def test_the_answer_to_a_post_is_the_task_as_get_reads_it(settings, registry, conn):
    """The insert returns only the times PostgreSQL sets; the rest of the answer is built from the request."""
    # Whole-number defaults from the settings: the answer must still show the float8 column's 5.0.
    client = create_app(dataclasses.replace(settings, task_timeout=5), registry).test_client()
    bodies = [
        {"type": "add", "args": {"x": 1, "y": 2}},
        {"type": "divide", "args": {"x": 1, "y": 4}, "priority": -3, "delay": 30, "timeout": 2, "max_attempts": 5},
        {"type": "sleep", "args": {"seconds": 1}, "run_at": 4102444800.5, "idempotency_key": "same-as-get"},
        {"type": "echo", "args": {"required_arg": 'ünïcode \u2028 \\ "'}},
        {"type": "mov3d", "args": {"dt": 0.2, "mass": 1e16, "r0": [0, 0, 1], "v0": [2, 0, 3], "radius": 1e-05}},
        {"required_arg": "legacy"},
    ]
    single = [client.post("/task", json=body) for body in bodies]
    assert all(response.status_code == 201 for response in single)
    bulk = client.post("/task", json=[{k: v for k, v in b.items() if k != "idempotency_key"} for b in bodies])
    assert bulk.status_code == 201
    for posted in [response.json for response in single] + bulk.json:
        view = "/view" if "required_arg" in posted else ""  # a legacy task is answered in the legacy form
        same_as_get(posted, client.get(f"/task/{posted['id']}{view}").json)


def test_an_array_of_plain_tasks_is_checked_as_one_at_a_time_would(client, conn):
    """Plain tasks (a known type, no notify_url or peer) are validated together: each keeps its own
    type's arguments with defaults filled in, in the order sent."""
    bodies = [
        {"type": "add", "args": {"x": 1, "y": 2}},
        {"type": "countdown", "args": {}},
        {"type": "divide", "args": {"x": 1.5, "y": 4}, "priority": 7},
        {"type": "countdown", "args": {"seconds": 3}},
        {"type": "add", "args": {"x": 5, "y": 6}, "max_attempts": 2},
    ]
    bulk = client.post("/task", json=bodies)
    assert bulk.status_code == 201
    assert [t["args"] for t in bulk.json] == [
        {"x": 1, "y": 2},
        {"seconds": 10},
        {"x": 1.5, "y": 4},
        {"seconds": 3},
        {"x": 5, "y": 6},
    ]
    assert [t["priority"] for t in bulk.json] == [0, 0, 7, 0, 0]
    assert [t["max_attempts"] for t in bulk.json] == [3, 3, 3, 3, 2]
    for posted in bulk.json:
        same_as_get(posted, client.get(f"/task/{posted['id']}").json)


def test_prefer_return_minimal_answers_only_the_ids(client, conn):
    bodies = [{"type": "add", "args": {"x": i, "y": 1}} for i in range(5)] + [{"required_arg": "legacy"}]
    response = client.post("/task", json=bodies, headers={"Prefer": "return=minimal"})
    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "return=minimal"
    assert [list(task) for task in response.json] == [["id"]] * 6
    stored = [client.get(f"/task/{task['id']}").json for task in response.json]
    assert [task["args"] for task in stored] == [{"x": i, "y": 1} for i in range(5)] + [{"required_arg": "legacy"}]
    assert count(conn) == 6

    # One task: its id alone; the same again with its idempotency key: 200 and the same id.
    single = {"type": "add", "args": {"x": 1, "y": 2}, "idempotency_key": "minimal"}
    first = client.post("/task/new", json=single, headers={"Prefer": 'respond-async, return="minimal"'})
    again = client.post("/task/new", json=single, headers={"Prefer": "return=minimal"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json == again.json == {"id": first.json["id"]}
    assert client.get(f"/task/{first.json['id']}").json["args"] == {"x": 1, "y": 2}


def test_return_minimal_stores_the_tasks_the_full_answer_shows(client, conn):
    # Without idempotency keys a minimal answer takes another insert (insert_tasks_quiet): the same rows.
    bodies = [
        {"type": "add", "args": {"x": 1, "y": 2}},
        {"type": "add", "args": {"x": 1, "y": 2}, "priority": -3, "delay": 60},
        {"type": "add", "args": {"x": 1, "y": 2}, "priority": 5, "run_at": time.time() + 3600, "max_attempts": 2},
        {"type": "echo", "args": {"required_arg": "x"}, "delay": 0, "priority": 0, "timeout": 1.5},
        {"required_arg": "legacy"},
    ]
    full = client.post("/task", json=bodies).json
    minimal = client.post("/task", json=bodies, headers={"Prefer": "return=minimal"}).json
    assert count(conn) == 2 * len(bodies)
    times = ("id", "created", "run_at", "expire")
    for shown, posted in zip(full, minimal, strict=True):
        stored = client.get(f"/task/{posted['id']}").json  # the legacy answer also repeats args: not compared
        assert {k: v for k, v in stored.items() if k not in times} == {k: shown[k] for k in stored if k not in times}
        for start in ("run_at", "expire"):  # whole seconds of two requests' clocks
            assert abs((stored[start] - stored["created"]) - (shown[start] - shown["created"])) <= 1


@pytest.mark.parametrize("prefer", [None, "return=representation", "return=minimalist", "handling=lenient"])
def test_without_prefer_return_minimal_every_task_is_answered_in_full(client, prefer):
    headers = {"Prefer": prefer} if prefer else {}
    response = client.post("/task", json=[{"type": "add", "args": {"x": 1, "y": 2}}], headers=headers)
    assert response.status_code == 201
    assert "Preference-Applied" not in response.headers
    same_as_get(response.json[0], client.get(f"/task/{response.json[0]['id']}").json)


def test_errors_are_the_same_with_prefer_return_minimal(client, conn):
    bodies = [{"type": "add", "args": {"x": 1, "y": 2}}, {"type": "add", "args": {"x": 1}}]
    response = client.post("/task", json=bodies, headers={"Prefer": "return=minimal"})
    assert response.status_code == 400
    assert response.json["message"] == "task [1]: the required param [y] was not passed."
    assert count(conn) == 0
