# gunicorn's own defaults, for the apps the bench sets flask-tasks against (bench/bare_app.py,
# bench/celery_app.py). Without `-c`, gunicorn reads ./gunicorn.conf.py, flask-tasks' own: 8 threads
# a worker, and its master starting the embedded PostgreSQL (DATABASE_URL is empty for those apps).
