"""Runs one task function, in the handler process or in an isolated child, and reports its outcome."""

from __future__ import annotations

import contextvars
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple


class TaskInfo(NamedTuple):
    """What a running task may know about itself: `flask_tasks.current_task()`.

    A NamedTuple rather than a frozen dataclass: a handler makes one per task, and it is three times cheaper.
    """

    id: Any
    type: str
    attempt: int
    max_attempts: int

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the task is, from 0 to 1, and what it does now: GET /task/<id> shows it.

        Call it as often as you like: the handler writes the latest report at most every half
        second. ValueError for a fraction that is not a number from 0 to 1.
        """
        report = progress_report(fraction, message)
        if _progress_sink is not None:
            _progress_sink(str(self.id), report)


PROGRESS_MESSAGE_LIMIT = 1000  # characters kept of a progress message

# Where progress reports go: the handler's (set by it), or in an isolated child the pipe to its parent.
_progress_sink: Callable[[str, dict[str, Any]], None] | None = None


def set_progress_sink(sink: Callable[[str, dict[str, Any]], None] | None) -> None:
    """Send the progress reports of tasks run in this process to `sink(task_id, report)`."""
    global _progress_sink
    _progress_sink = sink


def progress_report(fraction: float, message: str | None) -> dict[str, Any]:
    """{"fraction", "message", "updated"} as GET /task/<id> shows it; ValueError for a bad fraction or message."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
        raise ValueError(f"progress: the fraction must be a number from 0 to 1, not {fraction!r}")
    if message is not None and not isinstance(message, str):
        raise ValueError(f"progress: the message must be a string or None, not {type(message).__name__}")
    if message is not None:
        # PostgreSQL's jsonb holds neither \u0000 nor a lone surrogate (a file name read with surrogateescape).
        message = message.replace("\x00", "")[:PROGRESS_MESSAGE_LIMIT].encode("utf-8", "replace").decode("utf-8")
    return {"fraction": float(fraction), "message": message, "updated": time.time()}


_current_task: contextvars.ContextVar[TaskInfo | None] = contextvars.ContextVar("current_task", default=None)


def current_task() -> TaskInfo | None:
    """The task being run by this handler (id, type, attempt), or None outside a task."""
    return _current_task.get()


class running:  # noqa: N801 - used as a function: `with running(info):`
    """Makes `info` the current task inside the with block.

    A class rather than @contextlib.contextmanager: a handler enters it once per
    task, tens of thousands of times a second, and a generator costs twice as much.
    """

    def __init__(self, info: TaskInfo) -> None:
        self.info = info

    def __enter__(self) -> None:
        self.token = _current_task.set(self.info)

    def __exit__(self, *exc: object) -> None:
        _current_task.reset(self.token)


@dataclass(frozen=True)
class Outcome:
    """`done` with a JSON result, or `error`, `timeout` or `cancelled` with an error."""

    kind: str
    result: str | None = None
    error: dict[str, Any] | None = None


class Interrupt(BaseException):
    """Raised inside an in-process task to stop it: its timeout passed or it was cancelled.

    A BaseException, so a task's own `except Exception` does not swallow it.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


ERROR_TEXT_LIMIT = 64 * 1024  # characters kept of an error's message and of its traceback


def error_of(err: BaseException) -> dict[str, str]:
    """Message and traceback of an exception, even one whose str() itself fails; each cut to 64 KiB."""
    try:
        text = str(err)
    except Exception:  # noqa: BLE001 - a broken __str__ must not take the handler down
        text = "(its message could not be read)"
    message, trace = f"{type(err).__name__}: {text}", traceback.format_exc()
    return {"message": _cut(message), "traceback": _cut(trace)}


def _cut(text: str) -> str:
    if len(text) <= ERROR_TEXT_LIMIT:
        return text
    return (
        text[: ERROR_TEXT_LIMIT // 2]
        + f"\n... ({len(text) - ERROR_TEXT_LIMIT} characters cut) ...\n"
        + text[-ERROR_TEXT_LIMIT // 2 :]
    )


DONE_WITHOUT_RESULT = Outcome("done", result="null")


def to_json(value: Any) -> Outcome:
    if value is None:  # most tasks return nothing: spare the encoder, and making an Outcome
        return DONE_WITHOUT_RESULT
    try:
        return Outcome("done", result=json.dumps(value, allow_nan=False))
    except Exception as err:  # TypeError, ValueError, RecursionError (too deep) ...
        return Outcome("error", error={"message": f"the result is not JSON-serialisable: {error_of(err)['message']}"})


def timeout_error(seconds: float) -> dict[str, str]:
    return {"message": f"timeout: the task ran longer than its {seconds:g} s"}


CANCELLED = {"message": "cancelled: stopped at the client's request"}


class InProcessRunner:
    """Runs tasks in the handler's main thread.

    A timeout is a SIGALRM timer; a cancel request is a SIGUSR1 sent by the
    database thread. Either raises Interrupt inside the task, but only while a
    task is running (`armed`), never in the handler's own code; and again every
    0.1 s while the task goes on, so a task that swallows one still stops.
    """

    REPEAT = 0.1  # seconds between further interrupts of a task that goes on

    def __init__(self) -> None:
        self.armed = False
        self.timeout = 0.0
        self.cancelled: Callable[[], bool] = lambda: False  # is the running task cancelled?
        self.stopped_by = ""  # "timeout" or "cancelled" once an interrupt was raised in the task
        self.timer_set = False  # the SIGALRM timer may be running
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.signal(signal.SIGUSR1, self._on_cancel)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.stopped_by = self.stopped_by or "timeout"
            raise Interrupt("timeout", timeout_error(self.timeout)["message"])

    def _on_cancel(self, signum: int, frame: Any) -> None:
        if self.armed and self.cancelled():
            self.stopped_by = self.stopped_by or "cancelled"
            raise Interrupt("cancelled", CANCELLED["message"])

    def interrupt(self) -> None:
        """Called from another thread: the running task is cancelled; stop it."""
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    def run(
        self, func: Callable[..., Any], args: dict, timeout: float | None, cancelled: Callable[[], bool]
    ) -> Outcome:
        self.timeout, self.cancelled, self.stopped_by = timeout or 0.0, cancelled, ""
        try:
            try:
                # `timer_set` also covers a signal that landed in the last task's `finally`
                # before the timer was cleared; without a timeout, no system call at all.
                if timeout or self.timer_set:
                    signal.setitimer(signal.ITIMER_REAL, timeout or 0, self.REPEAT if timeout else 0)
                    self.timer_set = bool(timeout)
                self.armed = True
                value = func(**args)
            finally:
                self.armed = False
                if self.timer_set:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    self.timer_set = False
        except Interrupt as stop:
            release_leaked_logging_locks()
            return Outcome(stop.kind, error={"message": str(stop)})
        except BaseException as err:  # a task's SystemExit fails the task, not the handler
            if self.stopped_by:  # it swallowed the interrupt, then failed: the interrupt is the cause
                release_leaked_logging_locks()
                return self._interrupted()
            return Outcome("error", error=error_of(err))
        if self.stopped_by:  # it swallowed every interrupt and returned: still out of time (or cancelled)
            release_leaked_logging_locks()
            return self._interrupted()
        return to_json(value)

    def _interrupted(self) -> Outcome:
        if self.stopped_by == "timeout":
            return Outcome("timeout", error=timeout_error(self.timeout))
        return Outcome("cancelled", error=CANCELLED)


def release_leaked_logging_locks() -> None:
    """Release logging locks an interrupt left held by this thread.

    An exception raised by a signal handler can land inside logging code right
    after a handler took its lock and before the `try` that releases it. The
    lock is reentrant, so this thread goes on; any other thread that logs (the
    handler's database thread) would wait forever. Called between tasks, when
    this thread is in no logging call, so every lock it still owns is leaked.
    """
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {h for logger in loggers if isinstance(logger, logging.Logger) for h in logger.handlers}
    for lock in [getattr(logging, "_lock", None), *(h.lock for h in handlers)]:
        while lock is not None and lock._is_owned():
            lock.release()


def _exit_with_parent(parent: int) -> None:
    # If the handler dies (even by SIGKILL), its isolated task must not run on alone.
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


class Progress(NamedTuple):
    """A progress report an isolated child sends its parent, which passes it on to its own sink."""

    task_id: str
    report: dict[str, Any]


def _child(func: Callable[..., Any], args: dict, memory_limit_mb: int | None, out: Any, parent: int) -> None:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    sending = threading.Lock()  # the task's threads may report progress while the outcome is sent

    def send_progress(task_id: str, report: dict[str, Any]) -> None:
        with sending:
            out.send(Progress(task_id, report))

    set_progress_sink(send_progress)
    if memory_limit_mb:
        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        outcome = to_json(func(**args))
    except MemoryError:  # the task's memory is freed by now, so there is room to report it
        limit = f" of {memory_limit_mb} MB" if memory_limit_mb else ""
        outcome = Outcome("error", error={"message": f"MemoryError: the task ran out of its memory{limit}"})
    except BaseException as err:
        outcome = Outcome("error", error=error_of(err))
    with sending:
        try:
            out.send(outcome)
        except MemoryError:  # the result itself did not fit under the limit
            out.send(Outcome("error", error={"message": "MemoryError: the result does not fit the memory limit"}))
        out.close()


def _death(exitcode: int | None, memory_limit_mb: int | None) -> dict[str, str]:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = f" (its memory limit is {memory_limit_mb} MB)" if memory_limit_mb and name == "SIGKILL" else ""
        return {"message": f"the isolated process was killed by {name}{hint}"}
    return {"message": f"the isolated process exited with code {exitcode} before returning a result"}


def run_isolated(
    func: Callable[..., Any],
    args: dict,
    timeout: float | None,
    memory_limit_mb: int | None,
    cancelled: Callable[[], bool],
) -> Outcome:
    """Run the task in a forked child: a crash, os._exit, a timeout or runaway memory ends the child only.

    The child only runs the function and sends back its outcome: it never touches
    the handler's database connections, and it ends with os._exit (multiprocessing
    does that), so no atexit handler of the parent runs in it.
    """
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(func, args, memory_limit_mb, send, os.getpid()), daemon=True)
    child.start()
    send.close()
    deadline = time.monotonic() + timeout if timeout else None
    outcome: Outcome | None = None
    try:
        while outcome is None:
            if receive.poll(0.02):
                try:
                    message = receive.recv()
                except EOFError:  # it died without a word
                    child.join()
                    outcome = Outcome("error", error=_death(child.exitcode, memory_limit_mb))
                    break
                if not isinstance(message, Progress):
                    outcome = message
                    break
                if _progress_sink is not None:
                    _progress_sink(message.task_id, message.report)
            # Checked after every message too: a child that reports progress without a pause still stops.
            if cancelled():
                outcome = Outcome("cancelled", error=CANCELLED)
            elif deadline is not None and time.monotonic() > deadline:
                outcome = Outcome("timeout", error=timeout_error(timeout or 0))
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
        child.join()
        receive.close()
    return outcome
