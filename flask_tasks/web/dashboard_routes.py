"""The operator's views: GET /stats and GET /workers (JSON), GET /dashboard (a live page); their part of the document.

The page is a fixed HTML file with its own script and style sheet (flask_tasks/web/static/dashboard/, served by
the app's static route): no CDN and no inline script or style, so it works without internet and under the strict
Content-Security-Policy of errors.HTML_POLICY. Its script reads /stats, /workers and the listing (GET /task) every
few seconds and posts cancel and retry; the counts themselves come from flask_tasks.stats, shared with /metrics
and the CLI.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, request, url_for

from flask_tasks import stats, workers
from flask_tasks.config import Settings
from flask_tasks.models import ApiError
from flask_tasks.registry import Registry
from flask_tasks.shape import STATUSES
from flask_tasks.web import apidoc
from flask_tasks.web.access import require_operator
from flask_tasks.web.apidoc import error, json_answer, ref
from flask_tasks.web.pool import get_db
from flask_tasks.web.request_io import json_response, registry, settings

dashboard = Blueprint("dashboard", __name__)

ASSETS_DIR = Path(__file__).resolve().parent / "static" / "dashboard"
PAGE_FILE = ASSETS_DIR / "dashboard.html"
REFRESH_SECONDS = 3  # how often the page reads its data again
# The app's static route serves flask_tasks/web/static/: the page's own files are under dashboard/.
ASSETS = {"css": "dashboard.css", "js": "dashboard.js", "icon": "favicon.svg"}
FLAG_VALUES = {"true": True, "false": False}


def fresh(response: Response) -> Response:
    """An operator's view of the moment: kept by no cache, shared or not."""
    response.headers["Cache-Control"] = "no-store"
    return response


def check_parameters(params: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    """A 400 naming any query parameter this route does not take (a typo would otherwise go unnoticed)."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
        raise ApiError(400, f"unknown query parameter [{unknown[0]}]: {takes}")


def flag(params: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter: true or false, false when absent."""
    value = params.get(name, "false")
    if value not in FLAG_VALUES:
        raise ApiError(400, f"the parameter [{name}] must be true or false, not {value!r}")
    return FLAG_VALUES[value]


@dashboard.get("/stats")
def get_stats():
    """Counts by status and type, throughput, live handlers, unserved task types (the dashboard's data)."""
    require_operator()
    check_parameters(request.args, ())
    config: Settings = settings()
    conn = get_db()
    # The counts are recounted by whoever finds them stale; three intervals leaves the janitors the first go.
    stats.refresh_counts(conn, 3 * config.stats_interval)
    return fresh(json_response(stats.overview(conn, config, registry())))


@dashboard.get("/workers")
def get_workers():
    """The handlers and janitors alive; with ?gone=true also those stopped in the last hour."""
    require_operator()
    check_parameters(request.args, ("gone",))
    gone = flag(request.args, "gone")
    listed = workers.list_workers(get_db(), settings().lease_seconds, gone=gone)
    return fresh(json_response({"workers": listed}))


def _page_template() -> str:
    # Read once per process: the file ships with the package and does not change under a running server.
    cached = current_app.extensions.get("flask_tasks.dashboard_page")
    if cached is None:
        cached = current_app.extensions["flask_tasks.dashboard_page"] = PAGE_FILE.read_text()
    return cached


@dashboard.get("/dashboard")
def dashboard_page() -> Response:
    """The page; its script reads the JSON routes. Operators only, like the data it shows."""
    require_operator()
    check_parameters(request.args, ())
    values = {name: url_for("static", filename=f"dashboard/{file}") for name, file in ASSETS.items()}
    values["root"] = request.script_root  # the API's paths, behind a proxy that mounts the app under a prefix
    values["refresh"] = str(REFRESH_SECONDS)
    page = _page_template()
    for name, value in values.items():
        page = page.replace("{{" + name + "}}", html.escape(value))
    return fresh(current_app.response_class(page, mimetype="text/html"))


# -- the API document's part ------------------------------------------------------------

TAG = {
    "name": "dashboard",
    "description": "What the dashboard shows, for operators: counts, throughput, handlers; and the page itself.",
}
UNIX = {"type": "number", "description": "Unix seconds."}
UNIX_OR_NULL = {"type": ["number", "null"], "description": "Unix seconds."}
COUNT = {"type": "integer", "minimum": 0}


def _status_counts() -> dict[str, Any]:
    return {
        "title": "StatusCounts",
        "description": "How many tasks have each status.",
        "type": "object",
        "properties": {status: COUNT for status in STATUSES},
        "required": list(STATUSES),
    }


def _worker() -> dict[str, Any]:
    return {
        "title": "WorkerProcess",
        "description": "A handler or janitor process, as it records itself.",
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "kind": {"type": "string", "enum": ["handler", "janitor"]},
            "name": {"type": "string", "description": "The name it claims tasks under (a task's `worker`)."},
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "started": UNIX,
            "heartbeat": {**UNIX, "description": "Unix seconds: when it last said it is alive."},
            "heartbeat_age": {"type": "number", "description": "Seconds since its last heartbeat."},
            "stopped": {**UNIX_OR_NULL, "description": "Unix seconds: when it stopped; null while it runs."},
            "alive": {
                "type": "boolean",
                "description": "It has not stopped and its heartbeat is younger than LEASE_SECONDS.",
            },
            "task_types": {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": "The task types a handler claims.",
            },
            "tasks_done": {**COUNT, "description": "Tasks done since it started."},
            "tasks_failed": {**COUNT, "description": "Tasks failed since it started."},
            "current": {
                "type": ["array", "null"],
                "description": "The tasks it is running.",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "type": {"type": "string"},
                        "started": UNIX,
                    },
                    "required": ["id", "type"],
                },
            },
        },
        "required": [
            "id",
            "kind",
            "name",
            "host",
            "pid",
            "started",
            "heartbeat",
            "heartbeat_age",
            "stopped",
            "alive",
            "task_types",
            "tasks_done",
            "tasks_failed",
            "current",
        ],
    }


def _stats() -> dict[str, Any]:
    return {
        "title": "QueueStats",
        "description": "What the dashboard shows. Counts by status and type are recounted at most every "
        "STATS_INTERVAL seconds (`taken` says when); throughput and handlers are current.",
        "type": "object",
        "properties": {
            "taken": {**UNIX_OR_NULL, "description": "Unix seconds: when the counts were taken; null: never yet."},
            "statuses": ref("StatusCounts"),
            "types": {
                "type": "object",
                "description": "The counts of each task type that has tasks.",
                "additionalProperties": ref("StatusCounts"),
            },
            "oldest_waiting_seconds": {
                "type": ["number", "null"],
                "description": "How long the oldest waiting task has waited; null: none waits.",
            },
            "throughput": {
                "type": "array",
                "description": "Tasks done and failed in each minute of the last hour, oldest first.",
                "items": {
                    "type": "object",
                    "properties": {
                        "minute": {"type": "integer", "description": "Unix seconds: the minute's start."},
                        "done": COUNT,
                        "failed": COUNT,
                    },
                    "required": ["minute", "done", "failed"],
                },
            },
            "workers": {"type": "array", "items": ref("WorkerProcess"), "description": "The processes alive."},
            "unserved_types": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Task types of this server that no live handler claims: their tasks wait.",
            },
        },
        "required": ["taken", "statuses", "types", "oldest_waiting_seconds", "throughput", "workers", "unserved_types"],
    }


def _refusals() -> dict[str, Any]:
    return {
        "401": error("No operator credential: " + apidoc.OPERATOR_TEXT, headers=apidoc.OPERATOR_CHALLENGE),
        "403": error("A credential that is not an operator's, or a cross-site request."),
        "503": error(apidoc.UNAVAILABLE),
    }


def document_part(registry: Registry, settings: Settings) -> dict[str, Any]:
    """GET /stats, GET /workers and GET /dashboard, with the schemas of their answers."""
    schemas = {
        "StatusCounts": _status_counts(),
        "WorkerProcess": _worker(),
        "WorkerList": {
            "title": "WorkerList",
            "type": "object",
            "properties": {"workers": {"type": "array", "items": ref("WorkerProcess")}},
            "required": ["workers"],
        },
        "QueueStats": _stats(),
    }
    bad_parameter = error("An unknown query parameter, or a bad value.")
    paths = {
        "/stats": {
            "get": {
                "tags": ["dashboard"],
                "operationId": "getStats",
                "summary": "Counts, throughput and handlers: what the dashboard shows",
                "description": apidoc.OPERATOR_TEXT,
                "security": apidoc.OPERATOR_SECURITY,
                "responses": {
                    "200": json_answer(ref("QueueStats"), "The queue now."),
                    "400": bad_parameter,
                    **_refusals(),
                },
            }
        },
        "/workers": {
            "get": {
                "tags": ["dashboard"],
                "operationId": "getWorkers",
                "summary": "The handlers and janitors",
                "description": "Alive ones first. " + apidoc.OPERATOR_TEXT,
                "security": apidoc.OPERATOR_SECURITY,
                "parameters": [
                    {
                        "name": "gone",
                        "in": "query",
                        "required": False,
                        "description": "true: also the processes that stopped or whose heartbeat lapsed in the "
                        "last hour.",
                        "schema": {"type": "boolean", "default": False},
                    }
                ],
                "responses": {
                    "200": json_answer(ref("WorkerList"), "The processes."),
                    "400": bad_parameter,
                    **_refusals(),
                },
            }
        },
        "/dashboard": {
            "get": {
                "tags": ["dashboard"],
                "operationId": "getDashboard",
                "summary": "A live page of the queue: counts, throughput, handlers, running and failed tasks",
                "description": "It reads GET /stats, GET /workers and GET /task every few seconds, and cancels "
                "and retries tasks. " + apidoc.OPERATOR_TEXT,
                "security": apidoc.OPERATOR_SECURITY,
                "responses": {
                    "200": {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}},
                    "400": bad_parameter,
                    **_refusals(),
                },
            }
        },
    }
    return {"schemas": schemas, "paths": paths, "tags": [TAG]}
