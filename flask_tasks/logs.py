"""Logging for every process: the text format (the default) or one JSON object per line (LOG_FORMAT=json).

Only the standard `logging` module: a Formatter subclass, installed on the root logger's stderr handler
and (under gunicorn) on gunicorn's own error log, so every line a process writes to stderr through
logging is in the one format an operator chose.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
import types
from typing import Any

from flask_tasks.config import Settings
from flask_tasks.execution import current_task

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The attributes every LogRecord has; any other attribute came from `extra={...}` and goes in the JSON object.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# The keys every line has (and exception, stack): an `extra` field of the same name does not replace them.
_OWN = frozenset({"time", "level", "logger", "message", "process", "worker", "pid", "exception", "stack"})
_MARK = "_flask_tasks"  # set on the handler this module installs, so a second setup replaces it


class Identity:
    """Who is logging: set once per process by `setup`, read by every JsonFormatter (gunicorn's too).

    One shared object rather than a copy in each formatter: a gunicorn worker builds its settings
    (and its own worker name) after gunicorn's error log got its formatter in the master.
    """

    process = "python"
    worker = ""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: newlines in a message or a traceback are escaped.

    Keys: time (ISO 8601, UTC), level, logger, message, process, worker, pid; task_id and task_type
    when the record is emitted inside a running task (or given with `extra`); exception when there is one;
    and any other `extra` field.
    """

    _second = -1
    _second_text = ""

    def _time(self, created: float) -> str:
        # A handler may log thousands of lines a second: format the date once a second, then add the fraction.
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1_000_000):06d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": Identity.process,
            "worker": Identity.worker,
            "pid": record.process,
        }
        # The task context lives in a contextvar of the thread that logs: formatting happens in that
        # thread (StreamHandler.emit), so a task's own records get its id and the database thread's do not.
        task = current_task()
        if task is not None:
            entry["task_id"] = str(task.id)
            entry["task_type"] = task.type
        # `extra` fields; task_id and task_type given there win (a line about a task, logged outside it).
        for key in record.__dict__.keys() - _STANDARD - _OWN:
            if not key.startswith("_"):
                entry[key] = record.__dict__[key]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def process_label(kind: str, settings: Settings) -> str:
    """The `process` field: "handler <worker name>" and "janitor <worker name>" as those processes name
    themselves in their text lines; "web" and "cli" alone (a web process has many workers, each its pid)."""
    return f"{kind} {settings.worker_name}" if kind in ("handler", "janitor") else kind


def guess_kind(argv: list[str] | None = None) -> str:
    """The kind of process from its command line, for an entry point that does not say: handler, janitor,
    web (gunicorn, `flask run`) or cli (any other `flask` command)."""
    argv = sys.argv if argv is None else argv
    path = argv[0] if argv else ""
    stem = os.path.basename(path).removesuffix(".py")
    if stem == "__main__":  # python -m gunicorn, python -m flask: the package's name
        stem = os.path.basename(os.path.dirname(path))
    for kind in ("handler", "janitor"):
        if stem == kind or stem.startswith(kind + "_"):
            return kind
    if stem == "gunicorn":
        return "web"
    if stem == "flask":
        return "web" if "run" in argv[1:] else "cli"
    return stem or "python"


def formatter_for(settings: Settings) -> logging.Formatter:
    return JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)


def setup(settings: Settings, kind: str | None = None) -> None:
    """Log to stderr in the configured format, at LOG_LEVEL. Called again (a gunicorn worker after its
    master), it replaces what it installed before, so the worker's own name is the one logged."""
    Identity.process = process_label(kind or guess_kind(), settings)
    Identity.worker = settings.worker_name
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(settings))
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    if settings.log_format == "json":
        # Nothing else may write a line of its own to stderr: warnings and uncaught exceptions
        # (in any thread) become records too.
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_thread_uncaught


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: types.TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("flask_tasks").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("flask_tasks").critical(
        "uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )


def _ours_formatter() -> logging.Formatter | None:
    for handler in logging.getLogger().handlers:
        if getattr(handler, _MARK, False):
            return handler.formatter
    return None


@functools.cache
def _gunicorn_logger_class() -> type:
    from gunicorn.glogging import Logger

    class GunicornLogger(Logger):
        """gunicorn's logger in JSON mode writes JSON lines too. gunicorn gives its error log a handler
        of its own (and runs this setup again on a reload), so the formatter is swapped there."""

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            if isinstance(_ours_formatter(), JsonFormatter):
                for log in (self.error_log, self.access_log):
                    for handler in log.handlers:
                        handler.setFormatter(JsonFormatter())

    return GunicornLogger


def __getattr__(name: str) -> Any:
    # `logger_class = "flask_tasks.logs.GunicornLogger"` in gunicorn.conf.py. Built on first use: importing
    # gunicorn takes a fifth of a second, which a handler or a janitor has no reason to pay.
    if name == "GunicornLogger":
        return _gunicorn_logger_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
