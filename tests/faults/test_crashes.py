"""Handlers killed and stopped under load: nothing lost, nothing claimed twice, stops within 5 s."""

from __future__ import annotations

import random
import signal
import time

from tests.conftest import enqueue, enqueue_many, query, wait_for
from tests.faults.conftest import FULL


def statuses(conn) -> dict[str, int]:
    return dict(query(conn, "SELECT status, count(*) FROM tasks GROUP BY status"))


def test_crash_churn_loses_nothing(conn, processes, report):
    """SIGKILL a random handler every 2 s and restart it; every task still ends, once per successful attempt."""
    tasks, seconds, churn = (10_000, 0.025, 60) if FULL else (1_500, 0.05, 20)
    enqueue_many(conn, "effect", [{"seconds": seconds}] * tasks, max_attempts=10)
    options = {"LEASE_SECONDS": "2", "BATCH_SIZE": "5"}
    handlers = [processes.start("handler.py", **options) for _ in range(4)]
    kills, started = 0, time.monotonic()
    while time.monotonic() - started < churn:
        time.sleep(2)
        victim = random.randrange(len(handlers))
        handlers[victim].send_signal(signal.SIGKILL)
        handlers[victim].wait()
        handlers[victim] = processes.start("handler.py", **options)
        kills += 1
    wait_for(lambda: statuses(conn).keys() <= {"done", "failed"}, timeout=300, interval=0.5)
    elapsed = time.monotonic() - started

    counts = statuses(conn)
    assert sum(counts.values()) == tasks  # nothing lost
    assert counts == {"done": tasks}
    # The side effect of each task's successful (last) attempt is there; no attempt ran twice
    # (the primary key on (task, attempt) would have failed it), and no task has more effects than attempts.
    missing, excess = query(
        conn,
        """SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM attempt_effects e
                                                     WHERE e.task_id = t.id AND e.attempt = t.attempts)),
                  count(*) FILTER (WHERE (SELECT count(*) FROM attempt_effects e WHERE e.task_id = t.id) > t.attempts)
           FROM tasks t""",
    )[0]
    assert (missing, excess) == (0, 0)
    effects = query(conn, "SELECT count(*) FROM attempt_effects")[0][0]
    retried = query(conn, "SELECT count(*), coalesce(max(attempts), 0) FROM tasks WHERE attempts > 1")[0]
    report("tasks / handlers / kills", f"{tasks} / 4 / {kills} over {churn} s")
    report("lost", 0)
    report("ended done", counts["done"])
    report("tasks claimed again after their handler was killed", f"{retried[0]} (most attempts: {retried[1]})")
    report("side effects recorded", f"{effects} for {tasks} tasks")
    report("time to drain", f"{elapsed:.1f} s")


def test_no_double_claim(conn, processes, report):
    tasks = 2_000
    enqueue_many(conn, "record", [{"key": f"k{i}"} for i in range(tasks)])
    started = time.monotonic()
    for _ in range(8):
        processes.start("handler.py", BATCH_SIZE="10")
    wait_for(lambda: statuses(conn).get("done", 0) + statuses(conn).get("failed", 0) == tasks, timeout=120)
    assert statuses(conn) == {"done": tasks}
    assert query(conn, "SELECT count(*), count(DISTINCT key) FROM side_effects")[0] == (tasks, tasks)
    report("tasks / handlers", f"{tasks} / 8")
    report("side-effect rows", tasks)
    report("handlers that took part", query(conn, "SELECT count(DISTINCT worker) FROM tasks")[0][0])
    report("time", f"{time.monotonic() - started:.1f} s")


def test_graceful_stop_with_20_tasks_in_flight(conn, processes, report):
    ids = [enqueue(conn, "sleep", {"seconds": 1}) for _ in range(20)]
    handlers = [processes.start("handler.py", BATCH_SIZE="5") for _ in range(4)]
    wait_for(lambda: statuses(conn).get("running") == 20, timeout=30)
    time.sleep(0.3)
    started = time.monotonic()
    for handler in handlers:
        handler.send_signal(signal.SIGTERM)
    exits = []
    for handler in handlers:
        assert handler.wait(timeout=10) == 0
        exits.append(time.monotonic() - started)
    assert max(exits) < 5
    counts = statuses(conn)
    assert "running" not in counts
    assert counts.get("done", 0) + counts.get("waiting", 0) == 20
    released = query(conn, "SELECT count(*) FROM tasks WHERE status = 'waiting' AND attempts = 0")[0][0]
    assert released == counts.get("waiting", 0)  # given back with the attempt undone
    assert len(ids) == 20
    report("in flight at SIGTERM", 20)
    report("finished / released", f"{counts.get('done', 0)} / {released}")
    report("slowest exit", f"{max(exits):.2f} s (exit code 0 for all 4)")
