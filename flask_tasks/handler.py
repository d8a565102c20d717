"""The handler process: claims due tasks, runs them and stores their outcome."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import os
import random
import select
import sys
import threading
import time
from typing import NamedTuple

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from flask_tasks import db
from flask_tasks.config import ConfigError, Settings, comma_list, exit_with
from flask_tasks.delivery import Deliverer
from flask_tasks.execution import CANCELLED, InProcessRunner, Outcome, TaskInfo, error_of, run_isolated, running
from flask_tasks.peers import PeerLink
from flask_tasks.registry import Registry
from flask_tasks.startup import start_process
from flask_tasks.stopping import StopSignal, one_line

log = logging.getLogger("flask_tasks.handler")

# Errors for a result PostgreSQL will not store (e.g. \u0000 in jsonb, a string over 255 MB):
# the task fails with the reason, the rest of the batch is written.
UNSTORABLE = (psycopg2.DataError, psycopg2.errors.ProgramLimitExceeded)

RESCUE_EVERY = 1.0  # seconds between looks for tasks whose handler died
HEARTBEAT_EVERY = 1.0  # seconds between lease renewals (and looks for cancel requests), at most
LONGEST_BACKOFF = 3600.0  # seconds: the cap on the wait before a retry
QUEUE_SECONDS = 0.05  # claim about this much work ahead of the main thread...
LONG_TASK = 1.0  # ...and give the rest back when a task runs longer than this, for others to take
HARD_EXIT = 4.8  # seconds after SIGTERM/SIGINT when a handler exits whatever it is doing (honcho waits 5)
QUICK = " -c statement_timeout=500"  # for the last writes before that exit
SWITCH_INTERVAL = 0.0005  # seconds a thread waits for the GIL before asking for it (Python's default: 0.005)


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


def served_types(registry: Registry, only: list[str], exclude: list[str]) -> list[str]:
    """The task types a handler claims: every registered one, only `only`, or all but `exclude`.

    ConfigError for a name the registry does not know (a typo would otherwise leave
    that type's tasks waiting forever without a word), or for excluding every type.
    """
    known = registry.names()
    for setting, given in (("HANDLER_TASKS (--tasks)", only), ("HANDLER_EXCLUDE_TASKS (--exclude-tasks)", exclude)):
        unknown = [name for name in given if name not in known]
        if unknown:
            listed = ", ".join(f"[{name}]" for name in unknown)
            raise ConfigError(f"{setting} names unknown task types {listed}; the known types: {', '.join(known)}")
    if only:
        return [name for name in known if name in only]
    types = [name for name in known if name not in exclude]
    if exclude and not types:
        raise ConfigError("HANDLER_EXCLUDE_TASKS (--exclude-tasks) excludes every task type")
    return types


def retry_delay(attempt: int, first: float) -> float:
    """Exponential backoff with jitter: about first, 2 first, 4 first... give or take 25%."""
    return min(first * 2 ** min(attempt - 1, 40), LONGEST_BACKOFF) * random.uniform(0.75, 1.25)


def outcomes_json(items: list[Finished]) -> str:
    """The store_and_claim `outcomes` parameter. Results are JSON already: spliced in, not parsed again."""
    rows = []
    for item in items:
        error = json.dumps(item.outcome.error) if item.outcome.error is not None else "null"
        result = item.outcome.result if item.outcome.result is not None else "null"
        rows.append(
            f'{{"id":"{item.task.id}","token":"{item.task.token}","status":"{item.status}",'
            f'"result":{result},"error":{error},"delay":{item.delay!r},"started":{item.started!r}}}'
        )
    return "[" + ",".join(rows) + "]"


class Handler:
    """One handler process, in two threads.

    The main thread only runs tasks, one after another, from a short queue.
    The database thread does all the talking to PostgreSQL on its own
    connection: in one statement it writes every outcome finished since its
    last round trip and claims the next batch while the main thread is still
    busy with the current one; it renews leases, passes on cancel requests,
    rescues lost tasks, sleeps on LISTEN when there is no work, and enforces
    the grace period after SIGTERM.
    """

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.process = f"handler {settings.worker_name}"
        self.types = served_types(registry, settings.handler_tasks, settings.handler_exclude_tasks)
        self.conn: psycopg2.extensions.connection | None = None
        self._conn_pid = 0
        self.stopping = StopSignal(self.process)
        self.lock = threading.Condition()  # guards the five below
        self.queue: collections.deque[Claimed] = collections.deque()  # claimed, not started
        self.outbox: list[Finished] = []  # finished, not written
        self.held: dict[str, str] = {}  # claim token -> task id: claimed, outcome not written
        self.main_done = False  # the main thread has stopped taking tasks
        self.awaiting_outcomes = False  # the database thread waits on `lock` for an outcome
        self.current: Claimed | None = None  # the task the main thread runs
        self.current_since = 0.0  # time.monotonic() when it started
        self.task_seconds = 0.001  # moving average of how long a task runs, to size claims
        self.cancelled: set[str] = set()  # claim tokens whose task a client cancelled
        self.stopped = threading.Event()  # the database thread wrote and released everything
        self.wake_read, self.wake_write = os.pipe()  # wakes the database thread from select()
        self.idle = False  # the database thread sleeps in select()
        self.runner: InProcessRunner | None = None
        self.deliverer = Deliverer(settings, self.process, self.stopping.event)
        self.peer_link = PeerLink(settings, self.process, self.stopping.event)
        self.last_rescue = 0.0

    # -- the main thread ---------------------------------------------------------

    def run(self) -> int:
        self.stopping.install()
        # The database thread needs the GIL for a moment after each round trip, while the
        # main thread keeps it running tasks: by default it then waits up to 5 ms for it.
        # At 0.5 ms, 2 handlers drained 100,000 tasks about a tenth faster. A thread that
        # holds the GIL is only asked to give it up when another one is waiting for it.
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.runner = InProcessRunner()
        threading.Thread(target=self._database_loop, name="database", daemon=True).start()
        self.deliverer.start()
        self.peer_link.start()
        threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()
        log.info("%s: ready for task types %s", self.process, ", ".join(self.types))
        skipped = [name for name in self.registry.names() if name not in self.types]
        if skipped:  # say so: tasks of these types wait for another handler
            log.info(
                "%s: will NOT run task types %s: their tasks wait for another handler", self.process, ", ".join(skipped)
            )
        while not self.stopping.is_set():
            with self.lock:
                if not self.queue:
                    self.lock.wait_for(lambda: self.queue or self.stopping.is_set(), timeout=0.1)
                task = self.queue.popleft() if self.queue and not self.stopping.is_set() else None
            if task is not None:
                started, self.current_since, self.current = time.time(), time.monotonic(), task
                try:
                    outcome = self._execute(task)
                except Exception as err:  # the handler's own failure around the task: fail the task, go on
                    outcome = Outcome("error", error=error_of(err))
                self.current = None
                self._finish(task, outcome, started, time.monotonic() - self.current_since)
        with self.lock:
            self.main_done = True
            self.lock.notify_all()
        self._wake()
        self.stopped.wait(max(0.0, self.stopping.at + HARD_EXIT - 0.3 - time.monotonic()))
        log.info("%s: stopped", self.process)
        return 0

    def _execute(self, task: Claimed) -> Outcome:
        if task.token in self.cancelled:
            return Outcome("cancelled", error=CANCELLED)
        task_type = self.registry.get(task.type)
        assert task_type is not None and self.runner is not None  # the claim only takes known types
        with running(TaskInfo(task.id, task.type, task.attempt, task.max_attempts)):
            cancelled = lambda: task.token in self.cancelled  # noqa: E731
            if task_type.isolated:
                return run_isolated(task_type.func, task.args, task.timeout, task_type.memory_limit_mb, cancelled)
            return self.runner.run(task_type.func, task.args, task.timeout, cancelled)

    def _finish(self, task: Claimed, outcome: Outcome, started: float, seconds: float) -> None:
        """Hand an outcome to the database thread."""
        self.task_seconds = 0.8 * self.task_seconds + 0.2 * seconds
        delay = 0.0
        limit = self.settings.max_result_bytes
        if outcome.kind == "done" and outcome.result is not None and len(outcome.result) > limit:
            # The same input would give the same result again: fail now rather than retry.
            # (json.dumps escapes every non-ASCII character, so its length is in bytes.)
            message = f"the result is {len(outcome.result)} bytes of JSON: more than MAX_RESULT_BYTES={limit}"
            outcome, status = Outcome("error", error={"message": message}), "failed"
        elif outcome.kind in ("done", "cancelled"):
            status = outcome.kind
        elif task.attempt >= task.max_attempts:
            status = "failed"
        else:
            status = "waiting"
            task_type = self.registry.get(task.type)
            first = self.settings.retry_backoff
            if task_type is not None and task_type.retry_backoff is not None:
                first = task_type.retry_backoff
            delay = retry_delay(task.attempt, first)
        finished = Finished(task, status, outcome, delay, started, seconds)
        with self.lock:
            self.outbox.append(finished)
            if self.awaiting_outcomes:  # a notify per task costs more than the task when nobody waits
                self.lock.notify_all()
        if self.idle:
            self._wake()

    def _wake(self) -> None:
        os.write(self.wake_write, b"x")

    # -- the database thread -------------------------------------------------------

    def _db(self) -> psycopg2.extensions.connection:
        # Never reuse a connection inherited across fork: check the pid.
        if self.conn is None or self.conn.closed or self._conn_pid != os.getpid():
            self.conn = db.open_connection(self.settings, self.process, db.HANDLER_OPTIONS)
            self._conn_pid = os.getpid()
            if self.settings.listen_notify:
                db.run(self.conn, "listen")
        return self.conn

    def _drop_connection(self) -> None:
        if self.conn is not None:
            self.conn.close()  # never raises, even on a dead connection
        self.conn = None

    def _database_loop(self) -> None:
        heartbeat_every = min(self.settings.lease_seconds / 3, HEARTBEAT_EVERY)
        next_heartbeat = time.monotonic() + heartbeat_every
        backoff = db.Backoff()
        while True:
            with self.lock:
                items, self.outbox = self.outbox, []
                want = 0 if self.main_done or self.stopping.is_set() else self._wanted()
                done = self.main_done and not items
            try:
                if done:
                    self._release_held()
                    self.stopped.set()
                    return
                conn = self._db()
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
                self._drop_connection()
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
            items = [items[0]._replace(status="failed", outcome=failed)]
            rows = db.run(conn, "store_and_claim", {**params, "outcomes": outcomes_json(items)})
        claimed = [Claimed(*row[1:]) for row in rows if not row[0]]
        with self.lock:
            self.held.update((task.token, task.id) for task in claimed)
            if not (self.main_done or self.stopping.is_set()):  # else they are released with the rest
                self.queue.extend(claimed)
                self.lock.notify_all()
        fenced_off = {row[1] for row in rows if row[0]}
        if items:
            self.deliverer.poke()  # a finished task may have a notify_url
        self._done(items, fenced_off)
        return claimed

    def _done(self, items: list[Finished], fenced_off: set[str]) -> None:
        """Forget these tasks (written, or fenced off) and log one line for each."""
        if not items:
            return
        with self.lock:
            for item in items:
                self.held.pop(item.task.token, None)
                self.cancelled.discard(item.task.token)
        taken_over = " (not stored: its claim was taken over)"
        lines = [
            f"{self.process}: task {item.task.id} ({item.task.type}, attempt {item.task.attempt}) {item.status} "
            f"in {item.seconds:.3f} s" + (taken_over if item.task.id in fenced_off else "")
            for item in items
        ]
        log.info("%s", "\n".join(lines))

    def _heartbeat(self, conn: psycopg2.extensions.connection) -> None:
        """Renew the leases of held tasks; pass on cancel requests; give back the queue behind a long task."""
        with self.lock:
            current = self.current
            if current is not None and self.queue and time.monotonic() - self.current_since > LONG_TASK:
                self._release(conn, [task.token for task in self.queue])
            tokens = list(self.held)
        if not tokens:
            return
        rows = db.run(conn, "extend_leases", {"tokens": tokens, "lease": self.settings.lease_seconds})
        with self.lock:
            self.cancelled.update(str(token) for token, cancel_requested in rows if cancel_requested)
        if current is not None and current.token in self.cancelled and self.runner is not None:
            self.runner.interrupt()  # again at every heartbeat until the task stops

    def _rescue_lost_tasks(self, conn: psycopg2.extensions.connection) -> None:
        if time.monotonic() - self.last_rescue < RESCUE_EVERY:
            return
        self.last_rescue = time.monotonic()
        params = {"limit": 1000, "keep": self.settings.max_task_time}
        for task_id, status in db.run(conn, "rescue_lost_tasks", params):
            log.warning("%s: task %s had lost its handler; now %s", self.process, task_id, status)

    def _release(self, conn: psycopg2.extensions.connection, tokens: list[str], started: Claimed | None = None) -> None:
        """Give these claimed tasks back to the queue. Call with the lock held.

        The attempt is undone for those that never started; `started`, the task
        that ran, keeps it, so its next run sees the next attempt number.
        """
        keep = [started.token] if started is not None else []
        db.run(conn, "release_tasks", {"tokens": tokens, "started": keep, "keep": self.settings.max_task_time})
        for token in tokens:
            self.held.pop(token, None)
        self.queue = collections.deque(task for task in self.queue if task.token not in tokens)
        log.info("%s: gave back %s tasks it had not started", self.process, len(tokens))

    def _release_held(self) -> None:
        """Give back every task claimed and not finished."""
        try:
            with self.lock:
                if self.held:
                    self._release(self._db(), list(self.held))
        except psycopg2.Error as err:
            log.warning("%s: could not release tasks, their leases will run out: %s", self.process, one_line(err))

    def _watchdog(self) -> None:
        """After a stop request: if the current task runs past the grace period, give it back and leave.

        A thread of its own, so a database call that hangs elsewhere cannot hold the
        exit back: whatever happens, the process ends 4.8 s after the signal.
        """
        self.stopping.event.wait()
        threading.Timer(max(0.0, self.stopping.at + HARD_EXIT - time.monotonic()), os._exit, (0,)).start()
        if self.stopped.wait(max(0.0, self.stopping.at + self.settings.shutdown_grace - time.monotonic())):
            return
        grace = self.settings.shutdown_grace
        log.warning("%s: a task still runs after %.1f s; releasing it and exiting", self.process, grace)
        try:
            conn = db.connect(
                db.database_url(self.settings, self.process), f"flask-tasks {self.process} exit", options=QUICK
            )
            with self.lock:
                items, self.outbox = self.outbox, []
            if items:
                self._exchange(conn, items, 0)
            with self.lock:
                self._release(conn, list(self.held), started=self.current)
        except psycopg2.Error as err:
            log.warning("%s: could not release tasks: %s", self.process, one_line(err))
        logging.shutdown()
        os._exit(0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="handler.py",
        description="A handler: claims due tasks, runs them and stores their outcome. "
        "Settings come from the environment and .env.",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--tasks", metavar="TYPES", help="claim only these task types, comma-separated (instead of HANDLER_TASKS)"
    )
    choice.add_argument(
        "--exclude-tasks",
        metavar="TYPES",
        help="claim every task type but these, comma-separated (instead of HANDLER_EXCLUDE_TASKS)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # first, so that --help needs no settings
    settings, registry = start_process()
    try:
        if args.tasks is not None or args.exclude_tasks is not None:
            # A flag replaces both variables: with HANDLER_EXCLUDE_TASKS=mov3d in a .env that
            # all handlers share, `python handler.py --tasks mov3d` still runs mov3d.
            flag, given = ("--tasks", args.tasks) if args.tasks is not None else ("--exclude-tasks", args.exclude_tasks)
            if not comma_list(given):
                raise ConfigError(f"{flag} {given!r} names no task type")
            settings = dataclasses.replace(
                settings,
                handler_tasks=comma_list(args.tasks or ""),
                handler_exclude_tasks=comma_list(args.exclude_tasks or ""),
            )
        handler = Handler(settings, registry)
    except ConfigError as err:
        exit_with(err)
    return handler.run()
