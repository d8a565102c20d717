"""The processes at work: each handler and janitor records itself in `workers` and adds its counters to
`task_stats` and `task_minutes` at each heartbeat; the janitor marks gone those whose heartbeat lapsed.

Counting happens here, where the work is done, not in a web worker's memory: a counter of
/metrics survives any web restart, and a handler's own restart (its rows are added into the
nil uuid's row once it is gone, so a total never goes down).
"""

from __future__ import annotations

import bisect
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import psycopg2.extensions

from flask_tasks import db
from flask_tasks.shape import DONE, FAILED, WAITING

_COLUMN = {DONE: 0, FAILED: 1, WAITING: 2}  # where each status counts in a row of `stats`
NIL = "00000000-0000-0000-0000-000000000000"  # task_stats' row for the processes gone

# Upper bounds (seconds) of the task duration histogram; task_stats.seconds_buckets holds one
# count per bound and one more for longer attempts (not cumulative).
DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)


class Presence:
    """One process's row in `workers` and its counters since the last heartbeat.

    `count` may be called from any thread; `beat` sends what was counted and forgets it
    only once the database has it, so a failed beat loses nothing.
    """

    def __init__(self, kind: str, name: str, task_types: Iterable[str] = ()) -> None:
        self.id = str(uuid.uuid4())
        self.kind, self.name, self.task_types = kind, name, list(task_types)
        self.host, self.pid, self.started = socket.gethostname(), os.getpid(), time.time()
        self.tasks_done = self.tasks_failed = 0
        self.lock = threading.Lock()
        self.stats: dict[str, list[Any]] = {}  # type -> [done, failed, retried, seconds_sum, buckets]
        self.minutes: dict[int, list[int]] = {}  # unix minute -> [done, failed]

    def count(self, ended: Iterable[tuple[str, str, float | None]]) -> None:
        """Attempts that ended, as (task type, status, seconds it ran): done, failed, or waiting (it failed
        and will be tried again); cancelled counts nothing. Seconds are None when nobody knows (a lost handler).

        A batch at a time, under one lock: a handler counts tens of thousands of tasks a second.
        """
        minute = int(time.time()) // 60 * 60
        with self.lock:
            per_minute = self.minutes.setdefault(minute, [0, 0])
            for task_type, status, seconds in ended:
                column = _COLUMN.get(status)
                if column is None:
                    continue
                row = self.stats.get(task_type)
                if row is None:
                    row = self.stats[task_type] = [0, 0, 0, 0.0, [0] * (len(DURATION_BUCKETS) + 1)]
                row[column] += 1
                if seconds is not None:
                    row[3] += seconds
                    row[4][bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
                if column < 2:  # done or failed: the task ended
                    per_minute[column] += 1
                    if column == 0:
                        self.tasks_done += 1
                    else:
                        self.tasks_failed += 1

    def beat(self, conn: psycopg2.extensions.connection, current: list[dict[str, Any]] | None = None) -> None:
        """Heartbeat: record that this process is alive, what it runs now, and add its counters."""
        with self.lock:
            stats, self.stats = self.stats, {}
            minutes, self.minutes = self.minutes, {}
            done, failed = self.tasks_done, self.tasks_failed
        params = {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "started": self.started,
            "task_types": self.task_types,
            "tasks_done": done,
            "tasks_failed": failed,
            "current": json.dumps(current or []),
            "stats": json.dumps(
                [
                    {
                        "type": t,
                        "done": r[0],
                        "failed": r[1],
                        "retried": r[2],
                        "seconds_sum": r[3],
                        "seconds_buckets": r[4],
                    }
                    for t, r in stats.items()
                ]
            ),
            "minutes": json.dumps([{"minute": m, "done": d, "failed": f} for m, (d, f) in minutes.items()]),
        }
        try:
            db.run(conn, "worker_beat", params)
        except BaseException:
            self._restore(stats, minutes)
            raise

    def _restore(self, stats: dict[str, list[Any]], minutes: dict[int, list[int]]) -> None:
        """Put back counters a failed beat did not store, adding those counted meanwhile."""
        with self.lock:
            for task_type, row in stats.items():
                mine = self.stats.setdefault(task_type, [0, 0, 0, 0.0, [0] * len(row[4])])
                for i in range(4):
                    mine[i] += row[i]
                mine[4] = [a + b for a, b in zip(mine[4], row[4], strict=True)]
            for minute, (done, failed) in minutes.items():
                mine_minute = self.minutes.setdefault(minute, [0, 0])
                mine_minute[0] += done
                mine_minute[1] += failed

    def stop(self, conn: psycopg2.extensions.connection) -> None:
        """The process stops: send what it counted, then mark it gone."""
        self.beat(conn)
        db.run(conn, "worker_stopped", {"id": self.id})


def mark_gone(conn: psycopg2.extensions.connection, lapse: float) -> None:
    """Mark gone the processes whose heartbeat is older than `lapse` seconds; keep their counters in the totals."""
    db.run(conn, "mark_gone_workers", {"lapse": lapse})


def list_workers(conn: psycopg2.extensions.connection, lapse: float, gone: bool = False) -> list[dict[str, Any]]:
    """The processes alive (heartbeat within `lapse` seconds), alive first; with `gone`, those gone in the last hour."""
    return db.run_dicts(conn, "list_workers", {"lapse": lapse, "gone": gone})
