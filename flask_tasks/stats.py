"""What the dashboard, GET /stats, GET /metrics and the CLI count: tasks by status and type, throughput,
the counters of task_stats, and the task types no live handler serves.

Counting a big table on every scrape would cost the database more than the scrapes are worth:
tasks are counted into task_counts at most every STATS_INTERVAL (by the janitor, or by whoever
asks when no janitor did), and everything here reads small tables.
"""

from __future__ import annotations

from typing import Any

import psycopg2.extensions

from flask_tasks import db
from flask_tasks.config import Settings
from flask_tasks.registry import Registry
from flask_tasks.shape import STATUSES, WAITING
from flask_tasks.workers import DURATION_BUCKETS, list_workers

__all__ = ["DURATION_BUCKETS", "counts", "overview", "refresh_counts", "throughput", "totals", "unserved_types"]


def refresh_counts(conn: psycopg2.extensions.connection, max_age: float) -> bool:
    """Count the tasks by status and type, if the last count is older than `max_age` seconds
    and no other process is counting them now. Whether this call counted."""
    return bool(db.run(conn, "refresh_task_counts", {"max_age": max_age}))


def counts(conn: psycopg2.extensions.connection) -> dict[str, Any]:
    """The tasks by status and by type (each with every status), as last counted, and the age of the oldest
    task waiting and due then; `taken` is when they were counted (unix seconds; None: never)."""
    rows = db.run(conn, "task_counts")
    now = db.run(conn, "database_now")[0][0]
    statuses = dict.fromkeys(STATUSES, 0)
    types: dict[str, dict[str, int]] = {}
    taken = oldest = None
    for status, task_type, tasks, first, counted_at in rows:
        taken = counted_at
        if status is None:  # counted, and no tasks at all
            continue
        statuses[status] = statuses.get(status, 0) + tasks
        types.setdefault(task_type, dict.fromkeys(STATUSES, 0))[status] = tasks
        if status == WAITING and first is not None:
            oldest = first if oldest is None else min(oldest, first)
    return {
        "taken": taken,
        "statuses": statuses,
        "types": dict(sorted(types.items())),
        "oldest_waiting_seconds": None if oldest is None else max(0.0, now - oldest),
    }


def throughput(conn: psycopg2.extensions.connection, minutes: int = 60) -> list[dict[str, int]]:
    """Tasks done and failed in each of the last `minutes` minutes (the current one last), zeros included."""
    found = {minute: (done, failed) for minute, done, failed in db.run(conn, "task_throughput", {"minutes": minutes})}
    now = int(db.run(conn, "database_now")[0][0]) // 60 * 60
    series = []
    for minute in range(now - 60 * (minutes - 1), now + 60, 60):
        done, failed = found.get(minute, (0, 0))
        series.append({"minute": minute, "done": done, "failed": failed})
    return series


def totals(conn: psycopg2.extensions.connection) -> dict[str, dict[str, Any]]:
    """Per task type, since the database was made: attempts done, failed and retried, seconds they ran,
    and how many ran within each bound of DURATION_BUCKETS (one more count for longer)."""
    found: dict[str, dict[str, Any]] = {}
    for task_type, done, failed, retried, seconds, buckets in db.run(conn, "task_totals"):
        total = found.setdefault(
            task_type,
            {
                "done": 0,
                "failed": 0,
                "retried": 0,
                "seconds_sum": 0.0,
                "seconds_buckets": [0] * (len(DURATION_BUCKETS) + 1),
            },
        )
        total["done"] += done
        total["failed"] += failed
        total["retried"] += retried
        total["seconds_sum"] += seconds
        for i, n in enumerate(buckets[: len(DURATION_BUCKETS) + 1]):
            total["seconds_buckets"][i] += n
    return dict(sorted(found.items()))


def unserved_types(registry: Registry, alive: list[dict[str, Any]]) -> list[str]:
    """The task types of the registry that no live handler runs: their tasks wait."""
    served = {name for worker in alive if worker["kind"] == "handler" for name in worker["task_types"]}
    return [name for name in registry.names() if name not in served]


def overview(conn: psycopg2.extensions.connection, settings: Settings, registry: Registry) -> dict[str, Any]:
    """What GET /stats answers: counts, throughput over the last hour, the live processes and the unserved types."""
    alive = list_workers(conn, settings.lease_seconds)
    return {
        **counts(conn),
        "throughput": throughput(conn),
        "workers": alive,
        "unserved_types": unserved_types(registry, alive),
    }
