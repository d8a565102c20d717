"""The handler process: its main thread runs claimed tasks one after another; see handler_db for the rest."""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time

import psycopg2
import psycopg2.extensions

from flask_tasks import db
from flask_tasks.config import ConfigError, Settings
from flask_tasks.delivery import Deliverer
from flask_tasks.execution import (
    CANCELLED,
    InProcessRunner,
    Outcome,
    TaskInfo,
    error_of,
    run_isolated,
    running,
    set_progress_sink,
)
from flask_tasks.handler_db import Claimed, DatabaseThread, Finished
from flask_tasks.peers import PeerLink
from flask_tasks.registry import Registry
from flask_tasks.stopping import StopSignal, one_line
from flask_tasks.workers import Presence

log = logging.getLogger("flask_tasks.handler")

HARD_EXIT = 4.8  # seconds after SIGTERM/SIGINT when a handler exits whatever it is doing (honcho waits 5)
QUICK = " -c statement_timeout=500"  # for the last writes before that exit
SWITCH_INTERVAL = 0.0005  # seconds a thread waits for the GIL before asking for it (Python's default: 0.005)
LEASE_CHECK = 0.2  # seconds between two looks for held tasks whose lease may have run out


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


class Handler(DatabaseThread):
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
        self.db = db.OwnConnection(settings, self.process, db.HANDLER_OPTIONS, listen=settings.listen_notify)
        self.stopping = StopSignal(self.process)
        self.lock = threading.Condition()  # guards the eight below
        self.queue: collections.deque[Claimed] = collections.deque()  # claimed, not started
        self.outbox: list[Finished] = []  # finished, not written
        # Claimed, outcome not written: claim token -> time.monotonic() when its lease may run out
        # (when the statement that claimed or last renewed it was sent, plus LEASE_SECONDS).
        self.held: dict[str, float] = {}
        self.abandoned: set[str] = set()  # held tokens whose lease may have run out: not to be run
        self.give_back: list[str] = []  # taken off the queue unstarted, to be released (handler_db._give_back)
        self.main_done = False  # the main thread has stopped taking tasks
        self.awaiting_outcomes = False  # the database thread waits on `lock` for an outcome
        self.current: Claimed | None = None  # the task the main thread runs
        self.current_since = 0.0  # time.monotonic() when it started
        self.current_started = 0.0  # time.time() when it started
        self.task_seconds = 0.001  # moving average of how long a task runs, to size claims
        self.cancelled: set[str] = set()  # claim tokens whose task a client cancelled
        self.stopped = threading.Event()  # the database thread wrote and released everything
        self.wake_read, self.wake_write = os.pipe()  # wakes the database thread from select()
        self.idle = False  # the database thread sleeps in select()
        self.runner: InProcessRunner | None = None
        self.deliverer = Deliverer(settings, self.process, self.stopping.event)
        self.peer_link = PeerLink(settings, self.process, self.stopping.event)
        self.last_rescue = 0.0
        self.presence = Presence("handler", settings.worker_name, self.types)
        self.progress: dict[str, dict] = {}  # task id -> its latest progress report, not yet written
        self.progress_written: dict[str, float] = {}  # task id -> time.monotonic() of its last progress write

    # -- the main thread ---------------------------------------------------------

    def run(self) -> int:
        self.stopping.install()
        # The database thread needs the GIL for a moment after each round trip, while the
        # main thread keeps it running tasks: by default it then waits up to 5 ms for it.
        # At 0.5 ms, 2 handlers drained 100,000 tasks about a tenth faster. A thread that
        # holds the GIL is only asked to give it up when another one is waiting for it.
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.runner = InProcessRunner()
        set_progress_sink(self._progress_reported)
        threading.Thread(target=self._database_loop, name="database", daemon=True).start()
        self.deliverer.start()
        self.peer_link.start()
        threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()
        threading.Thread(target=self._watch_leases, name="leases", daemon=True).start()
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
                if task is not None:  # under the lock, so that _watch_leases sees every task that runs
                    started, self.current_since = time.time(), time.monotonic()
                    self.current_started, self.current = started, task
            if task is not None:
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
        if task.token in self.cancelled or task.token in self.abandoned:
            return Outcome("cancelled", error=CANCELLED)
        task_type = self.registry.get(task.type)
        assert task_type is not None and self.runner is not None  # the claim only takes known types
        with running(TaskInfo(task.id, task.type, task.attempt, task.max_attempts)):
            cancelled = lambda: task.token in self.cancelled or task.token in self.abandoned  # noqa: E731
            if task_type.isolated:
                return run_isolated(task_type.func, task.args, task.timeout, task_type.memory_limit_mb, cancelled)
            return self.runner.run(task_type.func, task.args, task.timeout, cancelled)

    def _finish(self, task: Claimed, outcome: Outcome, started: float, seconds: float) -> None:
        """Hand an outcome to the database thread."""
        self.task_seconds = 0.8 * self.task_seconds + 0.2 * seconds
        delay = 0.0
        limit = self.settings.max_result_bytes
        if outcome.kind == "cancelled" and task.token in self.abandoned and task.token not in self.cancelled:
            # Stopped by _watch_leases, not by a client: a lost attempt, as rescue_lost_tasks records one.
            message = f"attempt {task.attempt} was stopped: its handler could not renew its lease in time"
            outcome = Outcome("error", error={"message": message})
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
            delay = db.retry_delay(task.attempt, first)
        # The last report goes with the outcome, however recent the last write.
        finished = Finished(task, status, outcome, delay, started, seconds, self.progress.pop(task.id, None))
        with self.lock:
            self.outbox.append(finished)
            if self.awaiting_outcomes:  # a notify per task costs more than the task when nobody waits
                self.lock.notify_all()
        if self.idle:
            self._wake()

    def _progress_reported(self, task_id: str, report: dict) -> None:
        """A task reported progress (from the main thread, or an isolated child through it): keep the latest.

        Only while it runs: a thread a task left behind may report after its end, and that would stay here.
        """
        current = self.current
        if current is not None and current.id == task_id:
            self.progress[task_id] = report

    def _wake(self) -> None:
        os.write(self.wake_write, b"x")

    def _watch_leases(self) -> None:
        """Stop running tasks whose lease may have run out: another handler may have taken them.

        The database thread renews the leases; when it has not managed to for LEASE_SECONDS (a cut
        link, a stalled connection), or learns that a task was taken over, this handler cannot know
        who runs its tasks now. A thread of its own, since the database thread may hang in a call
        for as long as the link is down. The tasks claimed and not started are dropped (given back
        once the database answers, if still this handler's); the running one is interrupted as a
        cancel would, and written as a lost attempt: fenced off if the task was taken over.
        """
        while not self.stopped.wait(LEASE_CHECK):
            try:
                self._check_leases()
            except Exception as err:  # this thread must outlive any error, or leases go unwatched
                log.warning("%s: could not check its leases: %s", self.process, one_line(err))

    def _check_leases(self) -> None:
        """One look: give up the held tasks whose lease may have run out; interrupt the current one if given up."""
        now = time.monotonic()
        with self.lock:
            lost = [token for token, until in self.held.items() if until <= now and token not in self.abandoned]
            self.abandoned.update(lost)
            dropped = [task.token for task in self.queue if task.token in self.abandoned]
            if dropped:
                self.queue = collections.deque(task for task in self.queue if task.token not in self.abandoned)
                self.give_back.extend(dropped)
            current = self.current
        stop_now = current is not None and current.token in lost
        if stop_now or dropped:
            log.warning(
                "%s: lost touch with its leases (not renewed for LEASE_SECONDS=%g s, or taken over): "
                "another handler may run these tasks now; %sdropping %s claimed and not started",
                self.process,
                self.settings.lease_seconds,
                f"stopping task {current.id} ({current.type}, attempt {current.attempt}); " if stop_now else "",
                len(dropped),
            )
        if current is not None and current.token in self.abandoned and self.runner is not None:
            self.runner.interrupt()  # again at every look until the task stops

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
