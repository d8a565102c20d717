"""gunicorn settings, from the same environment (and .env) as every other process."""

from flask_tasks import db
from flask_tasks.auth import keys_or_exit
from flask_tasks.startup import freeze_loaded_objects, start_process

# Settings, logging, the task module and the JWT keys, checked once in the master before any worker starts.
_settings, _ = start_process()
keys_or_exit(_settings)

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.gunicorn_workers
threads = _settings.gunicorn_threads
# honcho stops every process 5 s after the first one exits; Heroku allows 30 s.
graceful_timeout = 4
accesslog = None
# Its own error log in the format LOG_FORMAT names (JSON lines too), built on first use.
logger_class = "flask_tasks.logs.GunicornLogger"


def on_starting(server):
    # Start the embedded database (if used) and migrate once, in the master,
    # so the workers find both ready and log nothing twice. A database that is
    # down now is no reason to stop: requests answer 503 until it is back.
    try:
        db.open_connection(_settings, "web").close()
    except Exception as err:  # noqa: BLE001
        server.log.warning("the database is not reachable yet: %s", " ".join(str(err).split()))


def post_worker_init(worker):
    # The worker has loaded the app: what exists now lives as long as the worker (startup.py).
    freeze_loaded_objects()
