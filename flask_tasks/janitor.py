"""The janitor process: deletes expired tasks, gives lost ones back to the queue, enqueues periodic tasks,
keeps the task counts fresh and marks gone the processes whose heartbeat lapsed."""

from __future__ import annotations

import logging
import time

import psycopg2
import psycopg2.extensions

from flask_tasks import db, periodic, stats
from flask_tasks.config import ConfigError, Settings, exit_with
from flask_tasks.registry import Registry
from flask_tasks.startup import start_process
from flask_tasks.stopping import StopSignal, one_line
from flask_tasks.workers import Presence, mark_gone

log = logging.getLogger("flask_tasks.janitor")

VACUUM_EVERY = 1.0  # seconds, at least, between two vacuums by one janitor
TICK = 1.0  # seconds, at most, between two heartbeats (and looks for periodic tasks due)


class Janitor:
    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else Registry()
        self.process = f"janitor {settings.worker_name}"
        self.conn: psycopg2.extensions.connection | None = None
        self.stopping = StopSignal(self.process)
        self.presence = Presence("janitor", settings.worker_name)
        self.last_vacuum = 0.0
        self.next_clean = self.next_count = 0.0  # time.monotonic() when each is due

    def run(self) -> int:
        self.stopping.install()
        backoff = db.Backoff()
        while not self.stopping.is_set():
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = db.open_connection(self.settings, self.process)
                self.round(self.conn)
                backoff.reset()
                self.stopping.pause(min(TICK, self.settings.janitor_interval, self.settings.stats_interval))
            except psycopg2.Error as err:
                log.warning("%s: database error, retrying: %s", self.process, one_line(err))
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                self.stopping.pause(backoff.next())
        try:
            if self.conn is not None and not self.conn.closed:
                self.presence.stop(self.conn)
        except psycopg2.Error as err:
            log.warning("%s: could not record its stop: %s", self.process, one_line(err))
        log.info("%s: stopped", self.process)
        return 0

    def round(self, conn: psycopg2.extensions.connection) -> None:
        """Every TICK: a heartbeat and the periodic tasks due; every STATS_INTERVAL, count the tasks;
        every JANITOR_INTERVAL, clean up."""
        self.presence.beat(conn)
        periodic.enqueue_due(conn, self.settings, self.registry)  # it logs each task it enqueues
        now = time.monotonic()
        if now >= self.next_count:
            self.next_count = now + self.settings.stats_interval
            stats.refresh_counts(conn, self.settings.stats_interval * 0.9)  # another janitor may just have
        if now >= self.next_clean:
            self.next_clean = now + self.settings.janitor_interval
            mark_gone(conn, self.settings.lease_seconds)
            self.clean_once(conn)

    def clean_once(self, conn: psycopg2.extensions.connection) -> int:
        """One round: rescue lost tasks, forget old failed token requests, then delete expired
        tasks in batches until a short batch."""
        params = {"limit": self.settings.janitor_batch, "keep": self.settings.max_task_time}
        rescued = db.run(conn, "rescue_lost_tasks", params)
        for task_id, status, _ in rescued:
            log.warning("%s: task %s had lost its handler; now %s", self.process, task_id, status)
        self.presence.count((task_type, status, None) for _, status, task_type in rescued)
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
    settings, registry = start_process()
    try:
        periodic.check_schedule(settings, registry)
    except ConfigError as err:
        exit_with(err)
    return Janitor(settings, registry).run()
