"""Handler processes against a real PostgreSQL: outcomes, exactly-once, crashes, signals."""

from __future__ import annotations

import logging
import signal
import time

import pytest

from flask_tasks import db
from flask_tasks.execution import Outcome
from flask_tasks.handler import Finished, Handler
from tests.conftest import claim, enqueue, enqueue_many, query, wait_for


def task_row(conn, task_id: str) -> dict:
    return db.run_dicts(conn, "get_task", {"id": task_id, "subject": None, "operator": True})[0]


def finished(conn, task_id: str) -> dict | None:
    row = task_row(conn, task_id)
    return row if row["status"] in ("done", "failed") else None


def count(conn, where: str = "true") -> int:
    return query(conn, f"SELECT count(*) FROM tasks WHERE {where}")[0][0]


def test_outcomes_are_stored(conn, processes):
    ids = {
        "add": enqueue(conn, "add", {"x": 1, "y": 2}),
        "boom": enqueue(conn, "boom", {"message": "it broke"}),
        "not_json": enqueue(conn, "not_json"),
        "nul_string": enqueue(conn, "nul_string"),
        "mov3d": enqueue(
            conn, "mov3d", {"dt": 0.01, "r0": [0, 0, 1], "v0": [1, 0, 1], "mass": 1, "radius": 0.1, "drag": True}
        ),
    }
    handler = processes.start("handler.py")
    rows = {name: wait_for(lambda i=i: finished(conn, i)) for name, i in ids.items()}

    assert rows["add"]["status"] == "done" and rows["add"]["result"] == 3
    assert rows["add"]["attempts"] == 1 and rows["add"]["started"] is not None and rows["add"]["finished"]
    assert rows["boom"]["status"] == "failed"
    assert rows["boom"]["error"]["message"] == "RuntimeError: it broke"
    assert "Traceback" in rows["boom"]["error"]["traceback"]
    assert rows["not_json"]["status"] == "failed"
    assert "not JSON-serialisable" in rows["not_json"]["error"]["message"]
    assert rows["nul_string"]["status"] == "failed"
    assert "cannot be stored" in rows["nul_string"]["error"]["message"]
    assert rows["mov3d"]["status"] == "done" and len(rows["mov3d"]["result"]["t"]) > 10

    assert handler.poll() is None, "a failing task must not stop the handler"
    log = processes.output(handler)
    assert f"task {ids['add']} (add, attempt 1) done in" in log
    assert "using PostgreSQL at" in log


def test_each_task_runs_exactly_once_with_8_handlers(conn, processes):
    enqueue_many(conn, "record", [{"key": f"k{i}"} for i in range(1000)])
    handlers = [processes.start("handler.py", BATCH_SIZE="10") for _ in range(8)]
    wait_for(lambda: count(conn, "status IN ('done', 'failed')") == 1000, timeout=60)

    assert count(conn, "status = 'done' AND attempts = 1") == 1000
    assert query(conn, "SELECT count(*), count(DISTINCT key) FROM side_effects")[0] == (1000, 1000)
    # More than one handler took part, so the test exercised concurrent claiming.
    assert query(conn, "SELECT count(DISTINCT worker) FROM tasks")[0][0] > 1
    assert all(h.poll() is None for h in handlers)


def test_sigkill_mid_task_is_rescued_with_a_second_attempt(conn, processes):
    task_id = enqueue(conn, "sleep", {"seconds": 2})
    first = processes.start("handler.py", LEASE_SECONDS="1.5", WORKER_NAME="first")
    wait_for(lambda: task_row(conn, task_id)["status"] == "running")
    first.send_signal(signal.SIGKILL)
    first.wait()

    processes.start("handler.py", LEASE_SECONDS="1.5", WORKER_NAME="second")
    row = wait_for(lambda: finished(conn, task_id), timeout=30)
    assert row["status"] == "done" and row["result"] == 2
    assert row["attempts"] == 2
    assert row["worker"] == "second"


def test_heartbeat_keeps_a_long_task_from_being_taken_twice(conn, processes):
    task_id = enqueue(conn, "sleep", {"seconds": 3.5})
    processes.start("handler.py", LEASE_SECONDS="1.2")
    wait_for(lambda: task_row(conn, task_id)["status"] == "running")
    processes.start("handler.py", LEASE_SECONDS="1.2")  # would rescue it if the lease lapsed
    row = wait_for(lambda: finished(conn, task_id), timeout=30)
    assert row["status"] == "done" and row["attempts"] == 1


def test_a_task_that_keeps_killing_its_handler_fails_after_max_attempts(conn, processes, settings, registry):
    task_id = enqueue(conn, "kill_handler", max_attempts=2)
    for attempt in (1, 2):
        proc = processes.start("handler.py", LEASE_SECONDS="1")
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert task_row(conn, task_id)["attempts"] == attempt
    time.sleep(1.2)  # the last lease runs out
    assert [status for _, status, _ in db.run(conn, "rescue_lost_tasks", {"limit": 10, "keep": 60})] == ["failed"]
    row = task_row(conn, task_id)
    assert row["status"] == "failed" and "attempt 2 was lost" in row["error"]["message"]


def test_sigterm_finishes_or_releases_and_exits_0_within_5_s(conn, processes):
    short = [enqueue(conn, "sleep", {"seconds": 1}) for _ in range(3)]
    long = enqueue(conn, "sleep", {"seconds": 30})
    handler = processes.start("handler.py", BATCH_SIZE="10", SHUTDOWN_GRACE="3")
    wait_for(lambda: count(conn, "status = 'running'") == 4)
    time.sleep(0.3)
    started = time.monotonic()
    handler.send_signal(signal.SIGTERM)
    assert handler.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert count(conn, "status = 'running'") == 0
    # The first short task finished; the rest went back to waiting with the attempt undone.
    assert task_row(conn, short[0])["status"] == "done"
    for task_id in [*short[1:], long]:
        row = task_row(conn, task_id)
        assert row["status"] == "waiting" and row["attempts"] == 0


def test_sigterm_during_a_long_task_releases_it_after_the_grace_period(conn, processes):
    task_id = enqueue(conn, "sleep", {"seconds": 30})
    handler = processes.start("handler.py", SHUTDOWN_GRACE="1")
    wait_for(lambda: task_row(conn, task_id)["status"] == "running")
    # "running" is written when the task is claimed; its main thread starts it a moment later,
    # and a task claimed but not started is given back at once, without the grace period.
    time.sleep(0.5)
    started = time.monotonic()
    handler.send_signal(signal.SIGTERM)
    assert handler.wait(timeout=10) == 0
    assert 1 <= time.monotonic() - started < 5
    row = task_row(conn, task_id)
    # It ran, so it keeps its attempt: its next run is attempt 2.
    assert row["status"] == "waiting" and row["attempts"] == 1
    assert "releasing it and exiting" in processes.output(handler)


def test_a_completion_whose_claim_was_taken_over_is_not_written(conn, settings, registry, caplog):
    caplog.set_level(logging.INFO, logger="flask_tasks.handler")
    kept_id, task_id = enqueue(conn, "add", {"x": 2, "y": 2}), enqueue(conn, "add", {"x": 1, "y": 2})
    handler = Handler(settings, registry)
    kept, claimed = sorted(claim(handler), key=lambda task: task.id != kept_id)
    assert str(claimed.id) == task_id
    # Another handler rescued and re-claimed it meanwhile: the claim token changed.
    query(conn, "UPDATE tasks SET claim_token = gen_random_uuid(), worker = 'other' WHERE id = %s", (task_id,))
    finished = Finished(claimed, "done", Outcome("done", result="3"), 0.0, 0.0, 0.0)
    also_finished = Finished(kept, "done", Outcome("done", result="4"), 0.0, 0.0, 0.0)
    handler._exchange(handler._db(), [finished, also_finished], 0)
    assert claimed.token not in handler.held and kept.token not in handler.held
    row = task_row(conn, task_id)
    assert row["status"] == "running" and row["result"] is None and row["worker"] == "other"
    assert task_row(conn, kept_id)["result"] == 4
    lines = {line.split(" task ")[1].split()[0]: line for line in caplog.text.splitlines() if " task " in line}
    assert lines[task_id].endswith("(not stored: its claim was taken over)")
    assert lines[kept_id].endswith("done in 0.000 s")
    handler.db.drop()


def test_handler_survives_losing_its_database_connection(conn, processes):
    handler = processes.start("handler.py")
    first = enqueue(conn, "add", {"x": 1, "y": 1})
    wait_for(lambda: finished(conn, first))
    killed = query(
        conn,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name LIKE 'flask-tasks handler%%' AND datname = current_database()",
    )[0][0]
    assert killed >= 1
    second = enqueue(conn, "add", {"x": 2, "y": 2})
    assert wait_for(lambda: finished(conn, second))["result"] == 4
    assert handler.poll() is None
    assert "database error, retrying" in processes.output(handler)


@pytest.mark.parametrize("names", [["add"], ["add", "noop"]])
def test_handler_claims_only_types_it_knows(conn, settings, registry, names):
    from flask_tasks.registry import Registry

    only = Registry()
    for name in names:
        only.task(registry.get(name).func, name=name)
    enqueue(conn, "sleep", {"seconds": 0})
    add_id = enqueue(conn, "add", {"x": 1, "y": 2})
    handler = Handler(settings, only)
    claimed = claim(handler)
    assert [str(row[0]) for row in claimed] == [add_id]
    handler.db.drop()


def test_the_claim_keeps_to_the_indexes_after_a_burst_into_an_empty_table(conn, settings, registry):
    # Idle handlers claim from an empty table first, and their prepared claim settles on a
    # generic plan made for that table. Without enable_seqscan=off that plan fetched the
    # claimed rows by scanning the whole table: on PostgreSQL 15, a burst of 100,000 tasks
    # then drained at 2,400 tasks/s instead of 35,000.
    handler = Handler(settings, registry)
    for _ in range(8):
        assert claim(handler) == []
    enqueue_many(conn, "record", [{"key": str(i)} for i in range(5000)])
    _, names = db.PREPARED["store_and_claim"]
    params = {"outcomes": "[]", "keep": 60, "worker": "w", "lease": 30, "types": ["record"], "batch": 1000}
    placeholders = ", ".join(["%s"] * len(names))
    plan = query(handler._db(), f"EXPLAIN EXECUTE store_and_claim({placeholders})", [params[n] for n in names])
    text = "\n".join(line for (line,) in plan)
    assert "Seq Scan on tasks" not in text, text
    assert "Index Scan using tasks_claim_idx" in text, text
    assert "Tid Scan on tasks" in text, text
    assert len(claim(handler)) == 1000


def test_a_backlog_of_peer_tasks_costs_the_claim_nothing(conn, settings, registry):
    # Tasks a peer runs are left out of the claim's index: 20,000 of them waiting (a peer that is
    # down) must not be read by each claim, as they were while the claim only filtered them out.
    handler = Handler(settings, registry)
    assert claim(handler) == []  # prepares the claim
    query(
        conn,
        """INSERT INTO tasks (type, args, expire, peer)
           SELECT 'record', '{}', now() + interval '1 hour', 'b' FROM generate_series(1, 20000)""",
    )
    enqueue_many(conn, "record", [{"key": str(i)} for i in range(10)])
    _, names = db.PREPARED["store_and_claim"]
    params = {"outcomes": "[]", "keep": 60, "worker": "w", "lease": 30, "types": ["record"], "batch": 1000}
    placeholders = ", ".join(["%s"] * len(names))
    sql = f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE store_and_claim({placeholders})"
    conn_ = handler._db()
    conn_.autocommit = False  # EXPLAIN ANALYZE runs the claim: roll it back
    try:
        [(plan,)] = query(conn_, sql, [params[n] for n in names])
    finally:
        conn_.rollback()
        conn_.autocommit = True

    def nodes(node):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    scans = [n for n in nodes(plan[0]["Plan"]) if n.get("Index Name") == "tasks_claim_idx"]
    assert scans, plan
    assert sum(n.get("Rows Removed by Filter", 0) + n["Actual Rows"] for n in scans) == 10, plan
