"""What every process does first: read settings, set up logging, load the tasks."""

from __future__ import annotations

import gc
import logging

from flask_tasks import logs
from flask_tasks.config import Settings, settings_or_exit
from flask_tasks.registry import DuplicateTaskError, Registry, TaskLoadError, load_tasks


def start_process(kind: str | None = None) -> tuple[Settings, Registry]:
    """Settings, logging and the task registry (TASKS_MODULE and installed taskpacks).

    `kind` (handler, janitor, web, cli) names the process in JSON log lines; by default it is
    guessed from the command line (`handler.py`, `janitor.py`, `gunicorn`, `flask`).

    A bad setting, a task module or pack that fails to import, or a task type defined
    twice ends the process with one line and exit code 2.
    """
    settings = settings_or_exit()
    logs.setup(settings, kind)
    try:
        registry = load_tasks(settings.tasks_modules)
    except (TaskLoadError, DuplicateTaskError) as err:  # the user's code: show what is wrong with it, then stop
        logging.getLogger("flask_tasks").critical("%s", err)
        raise SystemExit(2) from None
    return settings, registry


def freeze_loaded_objects() -> None:
    """Leave every object loaded so far out of the garbage collector's later passes.

    A bulk request makes tens of thousands of objects, so it sets off collections, and each full one
    walked every object the process had loaded too (Flask, pydantic's schemas, the task modules),
    which live as long as the process anyway. With them frozen, a web worker used about a fifth less
    CPU a task on arrays of 1,000 tasks (docs/BENCHMARKS.md). Called once the app is loaded.
    """
    gc.collect()  # what is garbage now is collected, not frozen
    gc.freeze()
