"""A periodic task for the janitor processes of tests/test_periodic.py
(TASKS_MODULE=tests.sidefx_tasks,tests.periodic_tasks). Only those processes import it."""

from flask_tasks import task


@task(cron="* * * * * */1", max_attempts=1)
def every_second() -> str:
    """Enqueued by a janitor at each second."""
    return "tick"
