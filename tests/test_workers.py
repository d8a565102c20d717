"""Handlers and janitors record themselves in `workers`; their counters (task_stats, task_minutes) survive restarts;
task counts are kept fresh in task_counts."""

from __future__ import annotations

import signal

import pytest

from flask_tasks import stats, workers
from tests.conftest import enqueue, query, wait_for

FAST = {"LEASE_SECONDS": "2", "JANITOR_INTERVAL": "0.2", "STATS_INTERVAL": "0.2"}


def alive(conn, kind: str | None = None) -> list[dict]:
    return [w for w in workers.list_workers(conn, 2.0) if kind is None or w["kind"] == kind]


def test_a_handler_records_itself_its_current_task_and_its_stop(conn, processes):
    handler = processes.start("handler.py", WORKER_NAME="h-one")
    [me] = wait_for(lambda: alive(conn, "handler"), timeout=20)
    assert me["name"] == "h-one" and me["pid"] == handler.pid and me["alive"] and me["stopped"] is None
    assert "echo" in me["task_types"] and me["heartbeat_age"] < 2
    task_id = enqueue(conn, "effect", {"seconds": 3})
    running = wait_for(lambda: [w for w in alive(conn, "handler") if w["current"]], timeout=20)
    assert running[0]["current"][0]["id"] == task_id and running[0]["current"][0]["type"] == "effect"
    handler.send_signal(signal.SIGTERM)
    handler.wait(timeout=10)
    assert alive(conn) == []
    [gone] = workers.list_workers(conn, 2.0, gone=True)
    assert gone["name"] == "h-one" and not gone["alive"] and gone["stopped"] is not None and gone["current"] == []


def test_a_killed_handler_is_marked_gone_once_its_heartbeat_lapses(conn, processes):
    handler = processes.start("handler.py", WORKER_NAME="h-killed", **FAST)
    wait_for(lambda: alive(conn, "handler"), timeout=20)
    processes.start("janitor.py", WORKER_NAME="j-one", **FAST)
    wait_for(lambda: alive(conn, "janitor"), timeout=20)
    handler.send_signal(signal.SIGKILL)
    handler.wait()
    wait_for(lambda: not alive(conn, "handler"), timeout=10)
    # Not merely old: the janitor marked it gone.
    wait_for(lambda: query(conn, "SELECT stopped IS NOT NULL FROM workers WHERE name = 'h-killed'") == [(True,)])


def test_counters_count_where_the_work_happens_and_survive_restarts(conn, processes):
    first = processes.start("handler.py", WORKER_NAME="h-first", **FAST)
    for n in range(5):
        enqueue(conn, "echo", {"required_arg": str(n)})
    enqueue(conn, "boom", {})
    enqueue(conn, "flaky", {"key": "k", "failures": 1})  # fails once, retried, then done
    wait_for(lambda: stats.totals(conn).get("echo", {}).get("done") == 5, timeout=30)
    wait_for(lambda: stats.totals(conn).get("flaky", {}).get("done") == 1, timeout=30)
    totals = stats.totals(conn)
    assert totals["boom"]["failed"] == 1 and totals["boom"]["done"] == 0
    assert totals["flaky"]["retried"] == 1
    assert sum(totals["echo"]["seconds_buckets"]) == 5 and totals["echo"]["seconds_sum"] >= 0
    first.send_signal(signal.SIGKILL)  # what it counted is in the database already
    first.wait()
    processes.start("janitor.py", **FAST)
    second = processes.start("handler.py", WORKER_NAME="h-second", **FAST)
    wait_for(
        lambda: not query(conn, "SELECT 1 FROM task_stats s JOIN workers w ON w.id = s.worker WHERE w.name = 'h-first'")
    )
    assert stats.totals(conn)["echo"]["done"] == 5  # folded into the totals of processes gone, not lost
    for n in range(3):
        enqueue(conn, "echo", {"required_arg": str(n)})
    wait_for(lambda: stats.totals(conn)["echo"]["done"] == 8, timeout=30)
    second.send_signal(signal.SIGTERM)
    second.wait(timeout=10)
    assert stats.totals(conn)["echo"]["done"] == 8
    minutes = stats.throughput(conn)
    assert len(minutes) == 60 and sum(m["done"] for m in minutes) == 9 and sum(m["failed"] for m in minutes) == 1
    assert minutes == sorted(minutes, key=lambda m: m["minute"])


def test_counts_are_counted_at_most_every_max_age_and_name_the_unserved_types(conn, registry, processes):
    for n in range(3):
        enqueue(conn, "echo", {"required_arg": str(n)})
    enqueue(conn, "boom", {})
    assert stats.counts(conn)["taken"] is None  # never counted
    assert stats.refresh_counts(conn, 60)
    assert not stats.refresh_counts(conn, 60)  # counted less than a minute ago
    counted = stats.counts(conn)
    assert counted["statuses"] == {"waiting": 4, "running": 0, "done": 0, "failed": 0, "cancelled": 0}
    assert counted["types"]["echo"]["waiting"] == 3 and counted["types"]["boom"]["waiting"] == 1
    assert counted["oldest_waiting_seconds"] is not None and counted["oldest_waiting_seconds"] >= 0
    processes.start("handler.py", HANDLER_TASKS="echo")
    wait_for(lambda: alive(conn, "handler"), timeout=20)
    assert "echo" not in stats.unserved_types(registry, alive(conn))
    assert "boom" in stats.unserved_types(registry, alive(conn))
    wait_for(lambda: query(conn, "SELECT count(*) FROM tasks WHERE status = 'done'") == [(3,)], timeout=30)
    assert stats.refresh_counts(conn, 0)
    assert stats.counts(conn)["statuses"]["done"] == 3 and stats.counts(conn)["statuses"]["waiting"] == 1


@pytest.mark.parametrize("janitors", [3])
def test_janitors_keep_counts_fresh_one_at_a_time(conn, processes, janitors):
    for _ in range(janitors):
        processes.start("janitor.py", **FAST)
    enqueue(conn, "echo", {"required_arg": "x"})
    wait_for(lambda: stats.counts(conn)["statuses"]["waiting"] == 1, timeout=20)
    first = stats.counts(conn)["taken"]
    wait_for(lambda: stats.counts(conn)["taken"] > first, timeout=10)
