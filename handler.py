"""A handler process: `python handler.py`. Start as many as you like."""

from flask_tasks.worker import main

if __name__ == "__main__":
    raise SystemExit(main())
