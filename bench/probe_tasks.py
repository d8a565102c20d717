"""The task module of the latency measurement (TASKS_MODULE=bench.probe_tasks): the shipped tasks plus a probe."""

import time

from flask_tasks import task
from tasks import *  # noqa: F403  the shipped tasks register themselves on import


@task
def bench_probe() -> float:
    """When the handler started this task (unix seconds): its result minus its insert's commit is the latency."""
    return time.time()
