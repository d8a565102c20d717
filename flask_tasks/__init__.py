"""flask-tasks: a PostgreSQL-backed HTTP task server."""

from flask_tasks.registry import task

__all__ = ["task"]
__version__ = "0.1.0"
