"""What every process does first: read settings, set up logging, load the tasks."""

from __future__ import annotations

import logging
import sys

from flask_tasks.config import Settings, settings_or_exit
from flask_tasks.registry import DuplicateTaskError, Registry, TaskLoadError, load_tasks


def start_process() -> tuple[Settings, Registry]:
    """Settings and the task registry (TASKS_MODULE and installed taskpacks).

    A bad setting, a task module or pack that fails to import, or a task type defined
    twice ends the process with one line and exit code 2.
    """
    settings = settings_or_exit()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        registry = load_tasks(settings.tasks_modules)
    except (TaskLoadError, DuplicateTaskError) as err:  # the user's code: show what is wrong with it, then stop
        logging.getLogger("flask_tasks").critical("%s", err)
        raise SystemExit(2) from None
    return settings, registry
