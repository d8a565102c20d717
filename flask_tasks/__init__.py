"""flask-tasks: a PostgreSQL-backed HTTP task server."""

from flask_tasks.execution import current_task
from flask_tasks.registry import task

__all__ = ["current_task", "task"]
__version__ = "0.1.0"
