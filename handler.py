"""A handler process: `python handler.py`. Start as many as you like.

`--tasks add,prime` claims only those task types, `--exclude-tasks mov3d` all but those
(instead of HANDLER_TASKS / HANDLER_EXCLUDE_TASKS); `--help` for more.
"""

from flask_tasks.handler_main import main

if __name__ == "__main__":
    raise SystemExit(main())
