"""frestq's hello world, as a flask-tasks task type: server B runs it for server A (see the README's Peer servers)."""

import time

from flask_tasks import task


@task
def hello_world(username: str) -> str:
    """Say hello to someone, taking our time as frestq's example did."""
    time.sleep(2)  # simulate we're working hard
    return f"hello {username}!"
