"""The janitor process: deletes expired tasks and gives lost ones back to the queue."""

from __future__ import annotations

import logging
import time

import psycopg2
import psycopg2.extensions

from flask_tasks import db
from flask_tasks.config import Settings
from flask_tasks.startup import start_process
from flask_tasks.stopping import StopSignal, one_line

log = logging.getLogger("flask_tasks.janitor")

VACUUM_EVERY = 1.0  # seconds, at least, between two vacuums by one janitor


class Janitor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = f"janitor {settings.worker_name}"
        self.conn: psycopg2.extensions.connection | None = None
        self.stopping = StopSignal(self.process)
        self.last_vacuum = 0.0

    def run(self) -> int:
        self.stopping.install()
        backoff = db.Backoff()
        while not self.stopping.is_set():
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = db.open_connection(self.settings, self.process)
                self.clean_once(self.conn)
                backoff.reset()
                self.stopping.pause(self.settings.janitor_interval)
            except psycopg2.Error as err:
                log.warning("%s: database error, retrying: %s", self.process, one_line(err))
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                self.stopping.pause(backoff.next())
        log.info("%s: stopped", self.process)
        return 0

    def clean_once(self, conn: psycopg2.extensions.connection) -> int:
        """One round: rescue lost tasks, forget old failed token requests, then delete expired
        tasks in batches until a short batch."""
        params = {"limit": self.settings.janitor_batch, "keep": self.settings.max_task_time}
        for task_id, status in db.run(conn, "rescue_lost_tasks", params):
            log.warning("%s: task %s had lost its handler; now %s", self.process, task_id, status)
        db.run(conn, "delete_old_token_failures")
        deleted = 0
        while not self.stopping.is_set():
            with conn.cursor() as cur:
                cur.execute(db.QUERIES["delete_expired_tasks"], {"limit": self.settings.janitor_batch})
                deleted += cur.rowcount
            if cur.rowcount < self.settings.janitor_batch:
                break
        if deleted:
            log.info("%s: deleted %s expired tasks", self.process, deleted)
            self._vacuum(conn)
        return deleted

    def _vacuum(self, conn: psycopg2.extensions.connection) -> None:
        """Make the space of deleted and updated rows reusable now, not at autovacuum's next look.

        Autovacuum looks at each database once a minute (autovacuum_naptime), and a
        busy queue leaves millions of dead row versions in a minute: the table and its
        indexes would grow many times over. At most once a second; SKIP_LOCKED, so
        janitors (and autovacuum) never wait for each other.
        """
        if time.monotonic() - self.last_vacuum < VACUUM_EVERY:
            return
        self.last_vacuum = time.monotonic()
        try:
            db.run(conn, "vacuum_tasks")
        except psycopg2.Error as err:
            log.warning("%s: vacuum failed (autovacuum will do it later): %s", self.process, one_line(err))


def main() -> int:
    settings, _ = start_process()
    return Janitor(settings).run()
