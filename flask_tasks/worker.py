"""The handler process: claims due tasks, runs them and stores their outcome."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import NamedTuple
from uuid import UUID

import psycopg2
import psycopg2.extensions
from psycopg2.extras import Json

from flask_tasks import db
from flask_tasks.config import Settings
from flask_tasks.execution import CANCELLED, InProcessRunner, Outcome, TaskInfo, run_isolated, running
from flask_tasks.registry import Registry
from flask_tasks.startup import start_process
from flask_tasks.stopping import StopSignal, one_line

log = logging.getLogger("flask_tasks.handler")

RESCUE_EVERY = 1.0  # seconds between looks for tasks whose handler died
HEARTBEAT_EVERY = 1.0  # seconds between lease renewals (and looks for cancel requests), at most
LONGEST_BACKOFF = 3600.0  # seconds: the cap on the wait before a retry


class Claimed(NamedTuple):
    id: UUID
    type: str
    args: dict
    token: UUID
    attempt: int
    max_attempts: int
    timeout: float | None


def retry_delay(attempt: int, first: float) -> float:
    """Exponential backoff with jitter: about first, 2 first, 4 first... give or take 25%."""
    return min(first * 2 ** (attempt - 1), LONGEST_BACKOFF) * random.uniform(0.75, 1.25)


class Handler:
    """One handler process. The main thread runs tasks; a heartbeat thread keeps their leases."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.process = f"handler {settings.worker_name}"
        self.conn: psycopg2.extensions.connection | None = None
        self._conn_pid = 0
        self.stopping = StopSignal(self.process)
        self.finished = threading.Event()
        self.held: dict[UUID, UUID] = {}  # claim token -> task id, for heartbeat and release
        self.held_lock = threading.Lock()
        self.cancelled: set[UUID] = set()  # claim tokens whose task a client cancelled
        self.runner: InProcessRunner | None = None
        self.last_rescue = 0.0

    # -- the loop ---------------------------------------------------------------

    def run(self) -> int:
        self.stopping.install()
        self.runner = InProcessRunner()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        log.info("%s: ready for task types %s", self.process, ", ".join(self.registry.names()))
        backoff = db.Backoff()
        while not self.stopping.is_set():
            try:
                self._rescue_lost_tasks()
                batch = self._claim()
                backoff.reset()
                if batch:
                    self._run_batch(batch)
                else:
                    self.stopping.pause(self.settings.poll_interval)
            except psycopg2.Error as err:
                log.warning("%s: database error, retrying: %s", self.process, one_line(err))
                self._drop_connection()
                self.stopping.pause(backoff.next())
        self._release_held(self.conn)
        self.finished.set()
        log.info("%s: stopped", self.process)
        return 0

    def _db(self) -> psycopg2.extensions.connection:
        # Never reuse a connection inherited across fork: check the pid.
        if self.conn is None or self.conn.closed or self._conn_pid != os.getpid():
            self.conn = db.open_connection(self.settings, self.process)
            self._conn_pid = os.getpid()
        return self.conn

    def _drop_connection(self) -> None:
        if self.conn is not None:
            self.conn.close()  # never raises, even on a dead connection
        self.conn = None

    # -- claiming and running ---------------------------------------------------

    def _rescue_lost_tasks(self) -> None:
        if time.monotonic() - self.last_rescue < RESCUE_EVERY:
            return
        self.last_rescue = time.monotonic()
        for task_id, status in db.run(self._db(), "rescue_lost_tasks", {"limit": 1000}):
            log.warning("%s: task %s had lost its handler; now %s", self.process, task_id, status)

    def _claim(self) -> list[Claimed]:
        params = {
            "types": self.registry.names(),
            "batch": self.settings.batch_size,
            "worker": self.settings.worker_name,
            "lease": self.settings.lease_seconds,
        }
        with self.held_lock:  # so a release at shutdown sees every claim
            batch = [Claimed(*row) for row in db.run(self._db(), "claim_tasks", params)]
            self.held.update((task.token, task.id) for task in batch)
        return batch

    def _run_batch(self, batch: list[Claimed]) -> None:
        for task in batch:
            if self.stopping.is_set():
                return  # the rest is released by run()
            started = time.monotonic()
            outcome = self._execute(task)
            status, stored = self._store(task, outcome)
            log.info(
                "%s: task %s (%s, attempt %s) %s in %.3f s%s",
                self.process,
                task.id,
                task.type,
                task.attempt,
                status,
                time.monotonic() - started,
                "" if stored else " (not stored: its claim had been taken over)",
            )

    def _execute(self, task: Claimed) -> Outcome:
        if task.token in self.cancelled:
            return Outcome("cancelled", error=CANCELLED)
        task_type = self.registry.get(task.type)
        assert task_type is not None and self.runner is not None  # the claim only takes known types
        with running(TaskInfo(task.id, task.type, task.attempt, task.max_attempts)):
            if task_type.isolated:
                cancelled = lambda: task.token in self.cancelled  # noqa: E731
                return run_isolated(task_type.func, task.args, task.timeout, task_type.memory_limit_mb, cancelled)
            return self.runner.run(task_type.func, task.args, task.timeout, task.token)

    def _store(self, task: Claimed, outcome: Outcome) -> tuple[str, bool]:
        """Write the outcome if the claim is still ours, retrying through a lost connection.

        Returns the status written and whether it was written.
        """
        if outcome.kind == "done":
            status, name = "done", "complete_task"
        elif outcome.kind == "cancelled":
            status, name = "cancelled", "complete_task"
        elif task.attempt < task.max_attempts:
            status, name = "waiting", "retry_task"
        else:
            status, name = "failed", "complete_task"
        task_type = self.registry.get(task.type)
        first_backoff = self.settings.retry_backoff
        if task_type is not None and task_type.retry_backoff is not None:
            first_backoff = task_type.retry_backoff
        params = {
            "id": task.id,
            "token": task.token,
            "status": status,
            "result": outcome.result,
            "error": Json(outcome.error) if outcome.error is not None else None,
            "delay": retry_delay(task.attempt, first_backoff),
        }
        backoff = db.Backoff()
        try:
            while True:
                try:
                    with self._db().cursor() as cur:
                        cur.execute(db.QUERIES[name], params)
                        return status, cur.rowcount == 1
                except psycopg2.DataError as err:  # e.g. a \u0000 in a string, which jsonb refuses
                    message = f"the result cannot be stored: {db.error_text(err)}"
                    status, name = "failed", "complete_task"
                    params.update(status=status, result=None, error=Json({"message": message}))
                except db.TRANSIENT_ERRORS as err:
                    if self.stopping.is_set():
                        return status, False  # the lease runs out and another handler runs it again
                    log.warning("%s: cannot store task %s yet: %s", self.process, task.id, one_line(err))
                    self._drop_connection()
                    time.sleep(backoff.next())
        finally:
            with self.held_lock:
                self.held.pop(task.token, None)
                self.cancelled.discard(task.token)

    def _release_held(self, conn: psycopg2.extensions.connection | None) -> None:
        with self.held_lock:
            tokens = list(self.held)
            if not tokens or conn is None:
                return
            try:
                db.run(conn, "release_tasks", {"tokens": tokens})
                log.info("%s: released %s unfinished tasks", self.process, len(tokens))
                self.held.clear()
            except psycopg2.Error as err:
                log.warning("%s: could not release tasks, their leases will run out: %s", self.process, one_line(err))

    # -- the heartbeat thread ---------------------------------------------------

    def _side_connection(self) -> psycopg2.extensions.connection:
        # The heartbeat's own connection: the main one is busy while a task runs.
        return db.connect(db.database_url(self.settings, self.process), f"flask-tasks {self.process} heartbeat")

    def _heartbeat(self) -> None:
        """Extend the leases of held tasks and pass on cancel requests; after a stop, enforce the grace period."""
        conn = None
        interval = min(self.settings.lease_seconds / 3, HEARTBEAT_EVERY)
        while not self.stopping.event.wait(interval):
            with self.held_lock:
                tokens = list(self.held)
            if not tokens:
                continue
            try:
                if conn is None or conn.closed:
                    conn = self._side_connection()
                rows = db.run(conn, "extend_leases", {"tokens": tokens, "lease": self.settings.lease_seconds})
            except psycopg2.Error as err:
                log.warning("%s: heartbeat failed: %s", self.process, one_line(err))
                conn = None
                continue
            for token, cancel_requested in rows:
                if cancel_requested and token not in self.cancelled:
                    self.cancelled.add(token)
                    assert self.runner is not None
                    self.runner.request_cancel(token)
        left = self.stopping.at + self.settings.shutdown_grace - time.monotonic()
        if self.finished.wait(max(left, 0)):
            return
        # The current task runs past the grace period: give it back and leave now.
        grace = self.settings.shutdown_grace
        log.warning("%s: a task still runs after %.1f s; releasing it and exiting", self.process, grace)
        try:
            if conn is None or conn.closed:
                conn = self._side_connection()
            self._release_held(conn)
        except psycopg2.Error as err:
            log.warning("%s: could not release tasks: %s", self.process, one_line(err))
        logging.shutdown()
        os._exit(0)


def main() -> int:
    settings, registry = start_process()
    return Handler(settings, registry).run()
