"""Group commit for single-task requests: one web worker's concurrent inserts share one statement and commit.

With several threads per worker (GUNICORN_THREADS), requests that arrive while a
batch is being written queue up; the next request thread to find the writer's
seat free writes every queued task (its own included) in one insert and one
commit, then hands each waiting thread its row. Each request still answers only
after its task is durably committed; what is shared is the round trip, the
statement and the WAL flush, which cost more than the row itself. With one
thread a batch holds one task.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions

from flask_tasks import db

MAX_BATCH = 500


@dataclass
class Pending:
    row: dict[str, Any]  # a task for insert_tasks, with its id
    done: bool = False
    stored: str | None = None  # the stored task as JSON text; None: its idempotency key was taken
    error: Exception | None = None


class InsertBatcher:
    """Stores tasks for the request threads of one process, a batch at a time."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: list[Pending] = []
        self._writing = False

    def insert(
        self, connection: Callable[[], psycopg2.extensions.connection], row: dict[str, Any], max_task_time: int
    ) -> str | None:
        """Store one task; its JSON text, or None if its idempotency key was taken.

        `connection` gives the connection to write with, asked only if this thread writes the batch.
        """
        pending = Pending(row)
        with self._changed:
            self._queue.append(pending)
            while not pending.done:
                if self._writing:
                    self._changed.wait()
                    continue
                self._writing = True
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                self._changed.release()
                try:
                    self._write(connection(), batch, max_task_time)
                finally:
                    self._changed.acquire()
                    self._writing = False
                    self._changed.notify_all()
        if pending.error is not None:
            raise pending.error
        return pending.stored

    def _write(self, conn: psycopg2.extensions.connection, batch: list[Pending], max_task_time: int) -> None:
        params = {"tasks": json.dumps([p.row for p in batch]), "max_task_time": max_task_time}
        try:
            stored = dict(db.run(conn, "insert_tasks", params))  # one statement, one commit
        except (psycopg2.DataError, UnicodeEncodeError, ValueError) as err:
            if len(batch) == 1:
                batch[0].error, batch[0].done = err, True
                return
            # One task holds a value PostgreSQL refuses (e.g. \u0000): store the others one by one.
            for pending in batch:
                self._write(conn, [pending], max_task_time)
            return
        except Exception as err:  # the database is down: each request answers for itself (503)
            for pending in batch:
                pending.error, pending.done = err, True
            return
        for pending in batch:
            pending.stored, pending.done = stored.get(pending.row["id"]), True
