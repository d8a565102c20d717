"""GET /metrics: the queue in Prometheus' text format (flask_tasks.metrics builds it), and its part of the document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST

from flask_tasks import metrics as queue_metrics
from flask_tasks import stats
from flask_tasks.config import Settings
from flask_tasks.models import ApiError
from flask_tasks.registry import Registry
from flask_tasks.web import apidoc
from flask_tasks.web.access import require_operator
from flask_tasks.web.apidoc import error
from flask_tasks.web.pool import get_db
from flask_tasks.web.request_io import registry, settings

metrics = Blueprint("metrics", __name__)


@metrics.get("/metrics")
def get_metrics() -> Response:
    """Every metric, read from the database now (operators only, like the dashboard)."""
    require_operator()
    if request.args:
        raise ApiError(400, f"unknown query parameter(s) {', '.join(sorted(request.args))}: /metrics takes none")
    body = queue_metrics.scrape(get_db(), settings(), registry())
    response = Response(body, status=200, content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the API document's part ------------------------------------------------------------


def _example() -> str:
    """What a scrape answers for one task type, made by the same code as a real answer."""
    per_bound = [0, 0, 3, 40, 5, 2] + [0] * (len(stats.DURATION_BUCKETS) - 5)
    counts = {
        "taken": 1700000000.0,
        "statuses": {},
        "types": {"add": {"waiting": 3, "running": 1, "done": 48, "failed": 2, "cancelled": 0}},
        "oldest_waiting_seconds": 0.8,
    }
    totals = {"add": {"done": 48, "failed": 2, "retried": 1, "seconds_sum": 0.71, "seconds_buckets": per_bound}}
    alive = [{"kind": "handler", "task_types": ["add"]}, {"kind": "janitor", "task_types": []}]
    return queue_metrics.exposition(queue_metrics.families(counts, totals, alive, ["add"], 1700000002.5)).decode()


def document_part(registry: Registry, settings: Settings) -> dict[str, Any]:
    """GET /metrics: a text/plain answer in Prometheus' text exposition format."""
    names = ", ".join(
        f"`flask_tasks_{name}`"
        for name in (
            "tasks{status,type}",
            "oldest_waiting_seconds",
            "counts_age_seconds",
            "tasks_done_total{type}",
            "tasks_failed_total{type}",
            "tasks_retried_total{type}",
            "task_duration_seconds{type} (histogram)",
            "workers_alive{kind}",
            "handlers_serving{type}",
        )
    )
    description = (
        "The queue for Prometheus: " + names + ". Counts by status are recounted at most every "
        "STATS_INTERVAL seconds, never on every scrape; the counters are written by the handlers and "
        "survive restarts. " + apidoc.OPERATOR_TEXT
    )
    paths = {
        "/metrics": {
            "get": {
                "tags": ["metrics"],
                "operationId": "getMetrics",
                "summary": "Prometheus metrics",
                "description": description,
                "security": apidoc.OPERATOR_SECURITY,
                "responses": {
                    "200": {
                        "description": "The metrics, in Prometheus' text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}, "example": _example()}},
                    },
                    "400": error("A query parameter: /metrics takes none."),
                    "401": error("No operator credential: " + apidoc.OPERATOR_TEXT, headers=apidoc.OPERATOR_CHALLENGE),
                    "403": error("A credential that is not an operator's, or a cross-site request."),
                    "503": error(apidoc.UNAVAILABLE),
                },
            }
        }
    }
    tag = {"name": "metrics", "description": "The queue's metrics, for Prometheus."}
    return {"schemas": {}, "paths": paths, "tags": [tag]}
