"""What a drain costs the database: the plan of store_and_claim on a backlog, the row locks a claim takes
while another handler claims, and the leases a heartbeat renews.

Run against whichever server the suite uses (the embedded PostgreSQL, or TEST_DATABASE_URL): the
planner and the row locking differ between versions, and each of these failed on one before.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import pytest

from flask_tasks import db
from flask_tasks.handler import Handler
from tests.conftest import claim, enqueue_many, query, wait_for

BACKLOG = 20_000
BATCH = 1000


def handler_connection(url: str) -> psycopg2.extensions.connection:
    """A connection as a handler's database thread opens it: its planner settings, statements prepared."""
    return db.connect(url, "flask-tasks handler tests", prepare=True, options=db.HANDLER_OPTIONS)


def params(rows: list[tuple], batch: int) -> dict:
    """store_and_claim's parameters: the claimed `rows` (as it returned them) done, and `batch` more wanted."""
    started = time.time()
    outcomes = [
        {"id": row[1], "token": row[4], "status": "done", "result": None, "error": None}
        | {"delay": 0.0, "started": started, "progress": None}
        for row in rows
    ]
    return {"outcomes": json.dumps(outcomes), "types": ["record"], "batch": batch}


def store_and_claim(conn: psycopg2.extensions.connection, done: list[tuple], batch: int) -> list[tuple]:
    extra = {"worker": "w", "lease": 30, "keep": 3600}
    return db.run(conn, "store_and_claim", params(done, batch) | extra)


def nodes(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


def explain_analyze(conn: psycopg2.extensions.connection, done: list[tuple], batch: int) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS) of store_and_claim as a handler runs it (prepared), rolled back."""
    values = params(done, batch) | {"worker": "w", "lease": 30, "keep": 3600}
    _, names = db.PREPARED["store_and_claim"]
    placeholders = ", ".join(["%s"] * len(names))
    conn.autocommit = False
    try:
        [(plan,)] = query(
            conn,
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE store_and_claim({placeholders})",
            [values[n] for n in names],
        )
    finally:
        conn.rollback()
        conn.autocommit = True
    return plan[0]


@pytest.fixture
def handler_conn(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    c = handler_connection(database_url)
    yield c
    c.close()


def test_store_and_claim_on_a_backlog_claims_first_and_reads_only_what_it_needs(conn, handler_conn):
    # Idle handlers claim from an empty table first: the prepared statement may settle on a
    # generic plan made for that table, which must still keep to the indexes on a backlog.
    for _ in range(8):
        assert store_and_claim(handler_conn, [], BATCH) == []
    enqueue_many(conn, "record", [{"key": str(i)} for i in range(BACKLOG)])
    other = store_and_claim(handler_conn, [], BATCH)  # another batch running meanwhile
    running = store_and_claim(handler_conn, [], BATCH)
    assert len(other) == len(running) == BATCH

    plan = explain_analyze(handler_conn, running, BATCH)
    everything = list(nodes(plan["Plan"]))
    text = json.dumps(plan, indent=1)

    # The claim runs first, right after the statement's snapshot. Run after storing the outcomes
    # (up to tens of milliseconds later), it locked the rows another handler had claimed meanwhile
    # (FOR UPDATE follows their update to its newest version, then drops it on the recheck,
    # still locked), and that handler's next statement waited for this one to commit.
    members = [n for n in plan["Plan"]["Plans"] if n.get("Parent Relationship") == "Member"]
    assert any(n.get("CTE Name") == "claimed" for n in nodes(members[0])), text

    assert not [n for n in everything if n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")], text
    # The claim walks tasks_claim_idx in order and stops after the batch...
    scans = [n for n in everything if n.get("Index Name") == "tasks_claim_idx"]
    assert len(scans) == 1 and scans[0]["Actual Rows"] == BATCH, text
    assert scans[0].get("Rows Removed by Filter", 0) == 0, text
    # ...and updates the rows it locked where they lie.
    tid_scans = [n for n in everything if n["Node Type"] == "Tid Scan"]
    assert len(tid_scans) == 1 and tid_scans[0]["Actual Rows"] == BATCH, text
    # The outcomes find their rows among the running tasks, not among the whole table.
    stored = next(n for n in everything if n.get("Subplan Name") == "CTE stored")
    read = [n for n in nodes(stored) if n.get("Relation Name") == "tasks"]
    assert read and all(n["Actual Rows"] + n.get("Rows Removed by Filter", 0) <= 2 * BATCH for n in read), text
    # Read once and matched to the outcomes: an index of running tasks read again for each outcome
    # costs all of it each time (tasks_running_idx has id as its third column: with a condition on id,
    # store_and_claim did that in a drain of 100,000 on PostgreSQL 15, at 7,500 tasks/s instead of 17,000).
    assert all(n["Actual Loops"] == 1 for n in read), text
    assert stored["Actual Rows"] == BATCH, text
    # No JIT: a plan made costly (a disabled scan costs 1e10 up to PostgreSQL 17) would compile
    # code at every execution, for longer than the claim itself takes.
    assert "JIT" not in plan, text


def test_a_claim_never_locks_the_tasks_another_handler_claimed_meanwhile(conn, database_url):
    enqueue_many(conn, "record", [{"key": str(i)} for i in range(50)])
    first, second, blocker = (handler_connection(database_url) for _ in range(3))
    try:
        held = store_and_claim(first, [], 5)
        # Hold one of first's tasks, so that storing its outcome waits in the middle of first's
        # statement, after its snapshot: the window in which second claims and commits.
        blocker.autocommit = False
        query(blocker, "SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (held[0][1],))
        first.autocommit = False  # its row locks outlive the statement, as until a commit they do
        answer: list = []
        worker = threading.Thread(target=lambda: answer.append(store_and_claim(first, held, 5)))
        worker.start()
        waits = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s"
        wait_for(lambda: query(conn, waits, (first.get_backend_pid(),))[0][0], timeout=10)
        taken = store_and_claim(second, [], 10)
        assert len(taken) == 10
        blocker.commit()
        worker.join(timeout=30)
        assert answer and len(answer[0]) == 5
        # first has not committed yet: it must hold no lock on second's tasks, or second's
        # next statement (storing their outcomes, renewing their leases) would wait for it.
        tokens = [row[4] for row in taken]
        try:
            query(second, "SELECT id FROM tasks WHERE claim_token = ANY(%s::uuid[]) FOR UPDATE NOWAIT", (tokens,))
        except psycopg2.errors.LockNotAvailable:
            pytest.fail("a claim locked tasks another handler had claimed after its snapshot")
        first.commit()
    finally:
        for c in (first, second, blocker):
            c.close()
    assert query(conn, "SELECT count(*) FROM tasks WHERE status = 'running'")[0][0] == 15


def lease_until(conn, token: str):
    return query(conn, "SELECT lease_until FROM tasks WHERE claim_token = %s::uuid", (token,))[0][0]


def test_a_heartbeat_renews_only_the_leases_that_have_run_a_while(conn, settings, registry):
    # Renewing every held task rewrote the whole claimed batch at each heartbeat, though a drain
    # ends most of those tasks within milliseconds of their claim.
    enqueue_many(conn, "record", [{"key": str(i)} for i in range(10)])
    handler = Handler(settings, registry)
    try:
        claimed = claim(handler)
        assert len(claimed) == 10
        with handler.lock:
            handler.current = handler.queue.popleft()
            handler.current_since = time.monotonic()
        old, fresh = claimed[1], claimed[2:]
        handler.held[old.token] = time.monotonic() + settings.lease_seconds / 2  # claimed a while ago
        before = {task.token: lease_until(conn, task.token) for task in claimed}
        time.sleep(0.01)
        handler._heartbeat(handler._db())
        after = {task.token: lease_until(conn, task.token) for task in claimed}
        assert after[old.token] > before[old.token]
        assert after[claimed[0].token] > before[claimed[0].token]  # the running task: for its cancel requests
        assert all(after[task.token] == before[task.token] for task in fresh)
        assert handler.held[old.token] > time.monotonic() + settings.lease_seconds - 1
    finally:
        handler.db.drop()


def indexes_holding(conn: psycopg2.extensions.connection, task_id: str) -> set[str]:
    """The indexes of `tasks` whose predicate this row meets: an update of the row adds an entry to each."""
    found = set()
    for name, predicate in query(
        conn,
        """SELECT indexrelid::regclass::text, pg_get_expr(indpred, indrelid)
           FROM pg_index WHERE indrelid = 'tasks'::regclass""",
    ):
        # The predicate is the catalog's own text, not input.
        sql = f"SELECT EXISTS (SELECT 1 FROM tasks WHERE id = %s AND ({predicate or 'true'}))"
        if query(conn, sql, (task_id,))[0][0]:
            found.add(name)
    return found


def test_a_task_on_its_way_through_the_queue_is_in_as_few_indexes_as_can_be(conn, handler_conn):
    # Each non-HOT update of a row (status changes are) adds an entry to every index whose predicate the new
    # version meets: a drain's cost on the server grows with these entries, three to five times a task.
    enqueue_many(conn, "record", [{}])
    (task_id,) = query(conn, "SELECT id::text FROM tasks")[0]
    assert indexes_holding(conn, task_id) == {"tasks_pkey", "tasks_claim_idx", "tasks_list_idx"}

    claimed = store_and_claim(handler_conn, [], 10)
    assert indexes_holding(conn, task_id) == {"tasks_pkey", "tasks_running_idx"}

    # Renewing a lease changes no indexed column: a HOT update, no index entry at all.
    handler_conn.autocommit = False
    try:
        db.run(handler_conn, "extend_leases", {"tokens": [claimed[0][4]], "lease": 30})
        (hot,) = query(handler_conn, "SELECT n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'tasks'")[0]
        assert hot == 1
    finally:
        handler_conn.rollback()
        handler_conn.autocommit = True

    store_and_claim(handler_conn, claimed, 0)
    assert query(conn, "SELECT status FROM tasks")[0][0] == "done"
    assert indexes_holding(conn, task_id) == {"tasks_pkey", "tasks_list_idx", "tasks_finished_expire_idx"}
