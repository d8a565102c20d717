"""A janitor process: `python janitor.py`. Deletes tasks older than MAX_TASK_TIME."""

from flask_tasks.janitor import main

if __name__ == "__main__":
    raise SystemExit(main())
