"""What every process does first: read settings, set up logging, load the tasks."""

from __future__ import annotations

import logging
import sys

from flask_tasks.config import Settings, settings_or_exit
from flask_tasks.registry import Registry, load_tasks


def start_process() -> tuple[Settings, Registry]:
    """Settings and the task registry; a bad setting or task module ends the process with one line."""
    settings = settings_or_exit()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        registry = load_tasks(settings.tasks_module)
    except Exception as err:  # the user's file: show what is wrong with it, then stop
        logging.getLogger("flask_tasks").critical("cannot load TASKS_MODULE=%s: %s", settings.tasks_module, err)
        raise SystemExit(2) from None
    return settings, registry
