"""The handler's database thread: in one statement it writes finished outcomes and claims the next tasks;
it renews leases, passes on cancel requests, rescues lost tasks and gives tasks back.

A mixin of Handler (flask_tasks/handler.py), whose __init__ sets the state both threads share.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import select
import time
from typing import TYPE_CHECKING, NamedTuple

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from flask_tasks import db
from flask_tasks.execution import Outcome
from flask_tasks.stopping import one_line

if TYPE_CHECKING:
    import threading

    from flask_tasks.config import Settings
    from flask_tasks.delivery import Deliverer
    from flask_tasks.execution import InProcessRunner
    from flask_tasks.stopping import StopSignal
    from flask_tasks.workers import Presence

log = logging.getLogger("flask_tasks.handler")

# Errors for a result PostgreSQL will not store (e.g. \u0000 in jsonb, a string over 255 MB):
# the task fails with the reason, the rest of the batch is written.
UNSTORABLE = (psycopg2.DataError, psycopg2.errors.ProgramLimitExceeded)

RESCUE_EVERY = 1.0  # seconds between looks for tasks whose handler died
HEARTBEAT_EVERY = 1.0  # seconds between lease renewals (and looks for cancel requests), at most
QUEUE_SECONDS = 0.05  # claim about this much work ahead of the main thread...
LONG_TASK = 1.0  # ...and give the rest back when a task runs longer than this, for others to take
PROGRESS_EVERY = 0.5  # seconds between two writes of one task's progress, at least


class Claimed(NamedTuple):
    id: str
    type: str
    args: dict
    token: str
    attempt: int
    max_attempts: int
    timeout: float | None


class Finished(NamedTuple):
    """An attempt's outcome, waiting to be written."""

    task: Claimed
    status: str  # done, failed, cancelled, or waiting (a retry)
    outcome: Outcome
    delay: float  # before the retry
    started: float  # unix time it started
    seconds: float  # how long it ran
    progress: dict | None = None  # its last progress report, if not yet written


def outcomes_json(items: list[Finished]) -> str:
    """The store_and_claim `outcomes` parameter. Results are JSON already: spliced in, not parsed again.

    A key left out reads as NULL: most outcomes are a task done without a result, and PostgreSQL
    lexes and parses every byte of this parameter (a batch holds up to BATCH_SIZE outcomes).
    """
    rows = []
    for item in items:
        outcome = item.outcome
        row = f'{{"token":"{item.task.token}","status":"{item.status}","started":{item.started!r}'
        if outcome.result is not None and outcome.result != "null":
            row += f',"result":{outcome.result}'
        if outcome.error is not None:
            row += f',"error":{json.dumps(outcome.error)}'
        if item.status == "waiting":
            row += f',"delay":{item.delay!r}'
        if item.progress is not None:
            row += f',"progress":{json.dumps(item.progress)}'
        rows.append(row + "}")
    return "[" + ",".join(rows) + "]"


class DatabaseThread:
    """The database thread's part of a Handler: all the talking to PostgreSQL, on its own connection."""

    settings: Settings
    process: str
    types: list[str]
    db: db.OwnConnection
    stopping: StopSignal
    lock: threading.Condition
    queue: collections.deque[Claimed]
    outbox: list[Finished]
    held: dict[str, float]
    abandoned: set[str]
    give_back: list[str]
    main_done: bool
    awaiting_outcomes: bool
    current: Claimed | None
    current_since: float
    task_seconds: float
    cancelled: set[str]
    stopped: threading.Event
    wake_read: int
    idle: bool
    runner: InProcessRunner | None
    last_rescue: float
    deliverer: Deliverer
    presence: Presence
    progress: dict[str, dict]
    progress_written: dict[str, float]
    current_started: float

    def _db(self) -> psycopg2.extensions.connection:
        return self.db.get()

    def _heartbeat_every(self) -> float:
        """Seconds between two heartbeats: at most a third of a lease."""
        return min(self.settings.lease_seconds / 3, HEARTBEAT_EVERY)

    def _database_loop(self) -> None:
        heartbeat_every = self._heartbeat_every()
        next_heartbeat = time.monotonic()  # the first round records this process in `workers`
        backoff = db.Backoff()
        while True:
            with self.lock:
                items, self.outbox = self.outbox, []
                want = 0 if self.main_done or self.stopping.is_set() else self._wanted()
                done = self.main_done and not items
            try:
                if done:
                    self._release_held()
                    self._say_stopped()
                    self.stopped.set()
                    return
                conn = self._db()
                if self.give_back:
                    self._give_back(conn)
                if self.progress:
                    self._write_progress(conn)
                if items or want:
                    claimed = self._exchange(conn, items, want)
                    items = []
                    if want and not claimed:
                        self._wait_for_work(conn, next_heartbeat)
                else:
                    self._wait_for_outcomes(next_heartbeat)
                if time.monotonic() >= next_heartbeat:
                    self._heartbeat(conn)
                    self._rescue_lost_tasks(conn)
                    next_heartbeat = time.monotonic() + heartbeat_every
                backoff.reset()
            except Exception as err:  # this thread must outlive any error, or nothing gets written
                log.warning("%s: database error, retrying: %s", self.process, one_line(err))
                self.db.drop()
                with self.lock:  # keep them for the next try, in order
                    self.outbox[:0] = items
                delay = backoff.next()
                if self.stopping.is_set():  # a stop ends pause() at once: still do not spin
                    time.sleep(min(delay, 0.2))
                else:
                    self.stopping.pause(delay)

    def _wanted(self) -> int:
        """How many tasks to claim now: about QUEUE_SECONDS of work (at most BATCH_SIZE), once half is done.

        Fast tasks are claimed a batch at a time; slow ones one at a time, so a
        handler does not sit on tasks that other handlers could be running.
        """
        if self.current is not None and time.monotonic() - self.current_since > LONG_TASK:
            return 0  # a long task: what is claimed now would only wait behind it
        target = max(1, min(self.settings.batch_size, int(QUEUE_SECONDS / max(self.task_seconds, 1e-6))))
        waiting = len(self.queue) + (1 if self.current is not None else 0)
        return target - waiting if waiting <= target // 2 else 0

    def _wait_for_work(self, conn: psycopg2.extensions.connection, until: float) -> None:
        """Nothing to claim: sleep until a task is announced (LISTEN/NOTIFY), an outcome arrives or time passes."""
        if conn.notifies:  # announced while the last claim ran: it may not have seen them
            conn.notifies.clear()
            return
        self.idle = True  # from now on the main thread wakes us through the pipe
        try:
            deadline = min(time.monotonic() + self.settings.poll_interval, until)
            while not self.stopping.is_set() and (left := deadline - time.monotonic()) > 0:
                if self.outbox or self.main_done:
                    return
                watch = [conn, self.wake_read] if self.settings.listen_notify else [self.wake_read]
                ready = select.select(watch, [], [], min(left, 0.1))[0]
                if self.wake_read in ready:
                    os.read(self.wake_read, 4096)
                    return
                if ready:
                    conn.poll()
                    if conn.notifies:
                        conn.notifies.clear()
                        return
        finally:
            self.idle = False

    def _wait_for_outcomes(self, until: float) -> None:
        with self.lock:
            self.awaiting_outcomes = True
            self.lock.wait_for(
                lambda: self.outbox or self.main_done or self._wanted(),
                timeout=max(0.0, min(until - time.monotonic(), 0.1)),
            )
            self.awaiting_outcomes = False

    def _exchange(self, conn: psycopg2.extensions.connection, items: list[Finished], want: int) -> list[Claimed]:
        """Write these outcomes and claim up to `want` tasks, in one statement; queue the claimed ones."""
        sent = time.monotonic()  # the leases of the claimed tasks run from about now
        params = {
            "outcomes": outcomes_json(items),
            "types": self.types,
            "batch": want,
            "worker": self.settings.worker_name,
            "lease": self.settings.lease_seconds,
            "keep": self.settings.max_task_time,
        }
        try:
            rows = db.run(conn, "store_and_claim", params)
        except UNSTORABLE as err:  # a result PostgreSQL refuses (a \u0000, over 255 MB): find it, fail it
            if len(items) > 1:
                for item in items:
                    self._exchange(conn, [item], 0)
                return self._exchange(conn, [], want) if want else []
            failed = Outcome("error", error={"message": f"the result cannot be stored: {db.error_text(err)}"})
            items = [items[0]._replace(status="failed", outcome=failed, progress=None)]
            rows = db.run(conn, "store_and_claim", {**params, "outcomes": outcomes_json(items)})
        claimed = [Claimed(*row[1:]) for row in rows if not row[0]]
        with self.lock:
            self.held.update((task.token, sent + self.settings.lease_seconds) for task in claimed)
            if time.monotonic() >= sent + self.settings.lease_seconds:
                # The answer came after the lease may have run out (a stalled link): another handler
                # may run these already. Never start them; give them back, the attempt undone.
                self.give_back.extend(task.token for task in claimed)
            elif not (self.main_done or self.stopping.is_set()):  # else they are released with the rest
                self.queue.extend(claimed)
                self.lock.notify_all()
        fenced_off = {row[1] for row in rows if row[0]}  # claim tokens
        if items:
            self.deliverer.poke()  # a finished task may have a notify_url
        self._done(items, fenced_off)
        return claimed

    def _done(self, items: list[Finished], fenced_off: set[str]) -> None:
        """Forget these tasks (written, or fenced off), count those written and log one line for each."""
        if not items:
            return
        with self.lock:
            for item in items:
                self.held.pop(item.task.token, None)
                self.abandoned.discard(item.task.token)
                self.cancelled.discard(item.task.token)
                self.progress_written.pop(item.task.id, None)
        self.presence.count(
            (item.task.type, item.status, item.seconds) for item in items if item.task.token not in fenced_off
        )
        if not log.isEnabledFor(logging.INFO):
            return
        taken_over = " (not stored: its claim was taken over)"
        lines = [
            f"{self.process}: task {item.task.id} ({item.task.type}, attempt {item.task.attempt}) {item.status} "
            f"in {item.seconds:.3f} s" + (taken_over if item.task.token in fenced_off else "")
            for item in items
        ]
        if self.settings.log_format == "json":  # one object per task, with its id and type as fields
            for item, line in zip(items, lines, strict=True):
                log.info("%s", line, extra={"task_id": item.task.id, "task_type": item.task.type})
        else:  # one record for the batch: a handler may end tens of thousands of tasks a second
            log.info("%s", "\n".join(lines))

    def _write_progress(self, conn: psycopg2.extensions.connection) -> None:
        """Write the latest progress report of the running task, at most every PROGRESS_EVERY seconds."""
        current, now = self.current, time.monotonic()
        if current is None or now - self.progress_written.get(current.id, 0.0) < PROGRESS_EVERY:
            return
        report = self.progress.pop(current.id, None)
        if report is None:
            return
        self.progress_written[current.id] = now
        db.run(conn, "write_progress", {"id": current.id, "token": current.token, "progress": json.dumps(report)})

    def _heartbeat(self, conn: psycopg2.extensions.connection) -> None:
        """Record this process alive with its counters; renew the leases of held tasks; pass on cancel
        requests; give back the queue behind a long task."""
        current = self.current
        running = [] if current is None else [{"id": current.id, "type": current.type, "started": self.current_started}]
        self.presence.beat(conn, running)
        with self.lock:
            current = self.current
            if current is not None and self.queue and time.monotonic() - self.current_since > LONG_TASK:
                self.give_back.extend(task.token for task in self.queue)
                self.queue.clear()
        if self.give_back:
            self._give_back(conn)
        # Only the leases claimed or renewed more than half a heartbeat ago, and the running task's
        # (so that a cancel request reaches it at this heartbeat). Renewing every held task rewrote
        # the whole claimed batch (up to BATCH_SIZE rows, most of them done a few milliseconds
        # later) at every heartbeat, holding up the next claim meanwhile. A task claimed since is
        # asked about at the next heartbeat, with at least LEASE_SECONDS less 1.5 heartbeats left.
        fresh = time.monotonic() + self.settings.lease_seconds - self._heartbeat_every() / 2
        with self.lock:
            running = self.current.token if self.current is not None else None
            tokens = [token for token, until in self.held.items() if until < fresh or token == running]
        if not tokens:
            return
        sent = time.monotonic()
        rows = db.run(conn, "extend_leases", {"tokens": tokens, "lease": self.settings.lease_seconds})
        renewed = {str(token) for token, _ in rows}
        with self.lock:
            for token in tokens:
                if token in self.held:  # one not renewed is no longer this handler's: stop it now
                    self.held[token] = sent + self.settings.lease_seconds if token in renewed else 0.0
            self.cancelled.update(str(token) for token, cancel_requested in rows if cancel_requested)
        if current is not None and current.token in self.cancelled and self.runner is not None:
            self.runner.interrupt()  # again at every heartbeat until the task stops

    def _rescue_lost_tasks(self, conn: psycopg2.extensions.connection) -> None:
        if time.monotonic() - self.last_rescue < RESCUE_EVERY:
            return
        self.last_rescue = time.monotonic()
        params = {"limit": 1000, "keep": self.settings.max_task_time}
        rescued = db.run(conn, "rescue_lost_tasks", params)
        for task_id, status, _ in rescued:
            log.warning("%s: task %s had lost its handler; now %s", self.process, task_id, status)
        self.presence.count((task_type, status, None) for _, status, task_type in rescued)

    def _release(self, conn: psycopg2.extensions.connection, tokens: list[str], started: Claimed | None = None) -> None:
        """Give these claimed tasks back to the queue. Call with them off self.queue, or with the lock held,
        so that the main thread cannot start one meanwhile.

        The attempt is undone for those that never started; `started`, the task
        that ran, keeps it, so its next run sees the next attempt number.
        release_tasks leaves alone the rows another handler has taken meanwhile.
        """
        keep = [started.token] if started is not None else []
        db.run(conn, "release_tasks", {"tokens": tokens, "started": keep, "keep": self.settings.max_task_time})
        released = set(tokens)
        with self.lock:
            for token in tokens:
                self.held.pop(token, None)
                self.abandoned.discard(token)
            self.queue = collections.deque(task for task in self.queue if task.token not in released)
            self.give_back = [token for token in self.give_back if token not in released]
        log.info("%s: gave back %s tasks it had not started", self.process, len(tokens))

    def _give_back(self, conn: psycopg2.extensions.connection) -> None:
        """Release the tasks taken off the queue unstarted: those behind a long task, and those dropped
        when their lease may have run out (Handler._watch_leases).

        Without the lock: the call may hang for as long as a link is down, and the main thread
        and _watch_leases must not hang with it.
        """
        self._release(conn, list(self.give_back))

    def _say_stopped(self) -> None:
        """Record this process gone, with its last counters."""
        try:
            self.presence.stop(self._db())
        except psycopg2.Error as err:
            log.warning("%s: could not record its stop: %s", self.process, one_line(err))

    def _release_held(self) -> None:
        """Give back every task claimed and not finished."""
        try:
            with self.lock:
                if self.held:
                    self._release(self._db(), list(self.held))
        except psycopg2.Error as err:
            log.warning("%s: could not release tasks, their leases will run out: %s", self.process, one_line(err))
