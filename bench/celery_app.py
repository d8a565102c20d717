"""The Flask + Celery yardstick: a Celery app on Redis, its tasks, and a tiny Flask app enqueuing them.

Wired as the projects flask-tasks grows out of did: a Flask API whose POST /task/new
calls the task's `.delay()` and answers 201 with the task id, and `celery worker`
processes running the tasks, with Redis as broker and result backend.

    celery -A bench.celery_app worker            # a worker
    gunicorn bench.celery_app:web -w 2           # the API

Redis: BENCH_REDIS_URL (default redis://127.0.0.1:6379) with three db indexes of
its own: 14 the broker, 15 the results (so the db's key count is the count of
stored results), 13 the probes' start times and the counter. BENCH_CELERY_CONF, a
JSON object, adds Celery settings (e.g. {"task_ignore_result": true}), so the
bench can start workers with other settings than Celery's defaults.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready
from flask import Flask, Response, jsonify, request

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
BROKER_DB, BACKEND_DB, PROBE_DB = 14, 15, 13
COUNTER_KEY = "bench:done"  # in PROBE_DB: how many noop_counted tasks have run, up to COUNT_INTERVAL late
COUNT_INTERVAL = 0.01  # seconds
PROBE_KEY = "bench:probe"  # in PROBE_DB: a hash, sample number -> time.time() when its probe started
READY = "bench: worker ready"  # what a worker prints once it consumes


def redis_url(db: int) -> str:
    """The URL of one of the bench's Redis dbs."""
    return f"{REDIS_URL}/{db}"


def make_app(results: bool = True) -> Celery:
    """The Celery app; without `results`, no result backend (a client that only sends tasks)."""
    celery = Celery(
        "bench.celery_app",
        broker=redis_url(BROKER_DB),
        backend=redis_url(BACKEND_DB) if results else None,
    )
    celery.conf.update(json.loads(os.environ.get("BENCH_CELERY_CONF") or "{}"))
    return celery


app = make_app()
_probe_redis: redis.Redis | None = None
_counted = 0  # noop_counted tasks this process ran
_count_lock = threading.Lock()  # the threads pool runs tasks in several threads
_count_flusher: threading.Thread | None = None


def probe_redis() -> redis.Redis:
    """One connection to PROBE_DB per process, opened on first use (after any fork)."""
    global _probe_redis
    if _probe_redis is None:
        _probe_redis = redis.Redis.from_url(redis_url(PROBE_DB))
    return _probe_redis


@app.task(name="noop")
def noop() -> None:
    """Do nothing (its result, None, is stored unless results are ignored)."""
    return None


@app.task(name="noop_counted")
def noop_counted() -> None:
    """Do nothing but count itself, in memory: how a drain with results ignored is known to be over.

    A thread of this process adds the count to COUNTER_KEY every COUNT_INTERVAL, so counting
    costs no round trip to Redis per task (it would cost as much as storing the result).
    """
    global _counted, _count_flusher
    with _count_lock:
        _counted += 1
        if _count_flusher is None:  # started in the process that runs tasks (after any fork)
            _count_flusher = threading.Thread(target=_flush_count, name="bench-count", daemon=True)
            _count_flusher.start()


def _flush_count() -> None:
    flushed = 0
    while True:
        time.sleep(COUNT_INTERVAL)
        counted = _counted
        if counted != flushed:
            probe_redis().incrby(COUNTER_KEY, counted - flushed)
            flushed = counted


@app.task(name="probe")
def probe(sample: int) -> None:
    """Record when this task started (unix seconds) under its sample number."""
    started = time.time()
    probe_redis().hset(PROBE_KEY, str(sample), repr(started))


@worker_ready.connect
def say_ready(**_: Any) -> None:
    print(READY, flush=True)  # at Celery's default log level, its own "ready." is not logged


TASKS = {"noop": noop}

web = Flask(__name__)


@web.post("/task/new")
def create_task() -> tuple[Response, int]:
    """Enqueue one task of a known type with its arguments; 201 with the task's id."""
    body: Any = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(message="the request body must be a JSON object"), 400
    task = TASKS.get(body.get("type"))
    if task is None:
        return jsonify(message=f"task type [{body.get('type')}] doesnt exist"), 400
    args = body.get("args") or {}
    result = task.delay(**args)
    return jsonify(id=result.id, status="PENDING", type=body["type"], args=args), 201
