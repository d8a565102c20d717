"""Group commit: the single-task inserts of a web worker's threads, stored in one statement and one commit.

A request thread hands its task row to its worker's GroupCommit and waits; one writer thread
takes every row waiting at that moment, stores them with one insert_tasks (one transaction,
one flush of the WAL) and wakes their threads. Each 201 still follows its task's durable
commit. Rows share a commit only when their requests are in flight together, so this helps
a worker with several threads (GUNICORN_THREADS) under load and changes nothing for a lone
request. A task with an idempotency key is not stored here (enqueue.store_tasks says why).
No Flask here.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from flask_tasks import db
from flask_tasks.config import Settings

log = logging.getLogger("flask_tasks.group_commit")

Times = tuple[int, int, int]  # created, run_at, expire: the times PostgreSQL set, unix seconds


class _Waiting:
    """One request's row, and what became of it."""

    __slots__ = ("row", "ended", "times", "error")

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.ended = threading.Event()
        self.times: Times | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """One per web worker process: a writer thread (started on first use, again after a fork) and its connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._pid = 0
        self._connection = db.OwnConnection(settings, "web")

    def insert(self, row: dict[str, Any]) -> Times | None:
        """Store one new task (a row as enqueue.task_row makes it) and return once its commit is durable:
        the times PostgreSQL set, or None when its idempotency key was taken. Raises what storing it raised."""
        waiting = _Waiting(row)
        with self._ready:
            if self._pid != os.getpid():  # the writer of a parent process did not survive the fork
                self._waiting = []
                threading.Thread(target=self._write, name="group-commit", daemon=True).start()
                self._pid = os.getpid()  # only once it started: if it could not, the next request tries again
            self._waiting.append(waiting)
            self._ready.notify()
        waiting.ended.wait()
        if waiting.error is not None:
            raise waiting.error
        return waiting.times

    def _write(self) -> None:
        while True:
            with self._ready:
                while not self._waiting:
                    self._ready.wait()
                batch, self._waiting = self._waiting, []
            self._store(batch)

    def _store(self, batch: list[_Waiting]) -> None:
        """Store a batch in one statement and wake its requests; every request is woken, whatever happens."""
        try:
            stored = self._insert([waiting.row for waiting in batch])
        except BaseException as err:  # noqa: BLE001 (each waiting request gets it)
            if len(batch) > 1 and not isinstance(err, db.TRANSIENT_ERRORS):
                # A value PostgreSQL refuses (a NUL in a string...) fails its own request, not the others'.
                for waiting in batch:
                    self._store([waiting])
                return
            for waiting in batch:
                waiting.error = err
                waiting.ended.set()
            return
        for waiting in batch:
            waiting.times = stored.get(waiting.row["id"])
            waiting.ended.set()

    def _insert(self, rows: list[dict[str, Any]]) -> dict[str, Times]:
        conn = self._connection.get()
        if db.ended_by_server(conn):  # it sat idle while the server restarted: open another
            self._connection.drop()
            conn = self._connection.get()
        params = {"tasks": json.dumps(rows), "max_task_time": self.settings.max_task_time}
        try:
            return {task_id: tuple(times) for task_id, *times in db.run(conn, "insert_tasks", params)}  # type: ignore[misc]
        except db.TRANSIENT_ERRORS:
            self._connection.drop()
            raise
