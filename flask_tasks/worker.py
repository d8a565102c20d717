"""The handler process: claims waiting tasks, runs them and stores their outcome."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from uuid import UUID

import psycopg2
import psycopg2.extensions
from psycopg2.extras import Json

from flask_tasks import db
from flask_tasks.config import Settings
from flask_tasks.registry import Registry
from flask_tasks.startup import start_process
from flask_tasks.stopping import StopSignal, one_line

log = logging.getLogger("flask_tasks.handler")

RESCUE_EVERY = 1.0  # seconds between looks for tasks whose handler died


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
        self.last_rescue = 0.0

    # -- the loop ---------------------------------------------------------------

    def run(self) -> int:
        self.stopping.install()
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

    def _claim(self) -> list[tuple]:
        params = {
            "types": self.registry.names(),
            "batch": self.settings.batch_size,
            "worker": self.settings.worker_name,
            "lease": self.settings.lease_seconds,
        }
        with self.held_lock:  # so a release at shutdown sees every claim
            batch = db.run(self._db(), "claim_tasks", params)
            self.held.update((token, task_id) for task_id, _, _, token, _ in batch)
        return batch

    def _run_batch(self, batch: list[tuple]) -> None:
        for task_id, type_name, args, token, attempt in batch:
            if self.stopping.is_set():
                return  # the rest is released by run()
            started = time.monotonic()
            status, result, error = self._outcome(type_name, args)
            stored = self._complete(task_id, token, status, result, error)
            log.info(
                "%s: task %s (%s, attempt %s) %s in %.3f s%s",
                self.process,
                task_id,
                type_name,
                attempt,
                status,
                time.monotonic() - started,
                "" if stored else " (not stored: its claim had been taken over)",
            )

    def _outcome(self, type_name: str, args: dict) -> tuple[str, str | None, dict | None]:
        task_type = self.registry.get(type_name)
        assert task_type is not None  # the claim only takes types this handler knows
        try:
            value = task_type.func(**args)
        except BaseException as err:  # a task's SystemExit fails the task, not the handler
            return "failed", None, {"message": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        try:
            return "done", json.dumps(value, allow_nan=False), None
        except (TypeError, ValueError) as err:
            return "failed", None, {"message": f"the result is not JSON-serialisable: {err}"}

    def _complete(self, task_id: UUID, token: UUID, status: str, result: str | None, error: dict | None) -> bool:
        """Store the outcome if the claim is still ours; keep trying through a lost connection."""
        params = {"id": task_id, "token": token, "status": status, "result": result, "error": Json(error)}
        backoff = db.Backoff()
        try:
            while True:
                try:
                    with self._db().cursor() as cur:
                        cur.execute(db.QUERIES["complete_task"], params)
                        return cur.rowcount == 1
                except psycopg2.DataError as err:  # e.g. a \u0000 in a string, which jsonb refuses
                    message = f"the result cannot be stored: {one_line(err)}"
                    params.update(status="failed", result=None, error=Json({"message": message}))
                except db.TRANSIENT_ERRORS as err:
                    if self.stopping.is_set():
                        return False  # the lease runs out and another handler runs it again
                    log.warning("%s: cannot store task %s yet: %s", self.process, task_id, one_line(err))
                    self._drop_connection()
                    time.sleep(backoff.next())
        finally:
            with self.held_lock:
                self.held.pop(token, None)

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
        """Extend the leases of held tasks; after a stop request, enforce the grace period."""
        conn = None
        while not self.stopping.event.wait(self.settings.lease_seconds / 3):
            with self.held_lock:
                tokens = list(self.held)
            if not tokens:
                continue
            try:
                if conn is None or conn.closed:
                    conn = self._side_connection()
                db.run(conn, "extend_leases", {"tokens": tokens, "lease": self.settings.lease_seconds})
            except psycopg2.Error as err:
                log.warning("%s: heartbeat failed: %s", self.process, one_line(err))
                conn = None
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
