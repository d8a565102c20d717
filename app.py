"""The web process: `gunicorn app:app -c gunicorn.conf.py` (or `flask --app app run`)."""

from flask_tasks.web import create_app

app = create_app()
