"""The listing and the actions on tasks: GET /task, POST /task/<id>/retry, POST /task/bulk/cancel and
POST /task/bulk/retry; and their part of the API document. flask_tasks.listing and flask_tasks.actions
do the work; web.access decides who may.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Blueprint, request

from flask_tasks import actions, shape
from flask_tasks import listing as task_listing
from flask_tasks.auth import OPERATOR_SCOPE, AuthError
from flask_tasks.config import Settings
from flask_tasks.models import ApiError
from flask_tasks.registry import Registry
from flask_tasks.web import access, apidoc
from flask_tasks.web.apidoc import JSON, error, json_answer, ref
from flask_tasks.web.pool import get_db
from flask_tasks.web.request_io import json_body, json_response, settings

listing = Blueprint("listing", __name__)
# A 401 for want of operator rights names Basic too when OPERATOR_PASSWORD is set (the browser prompts).

ALL = "all"  # {"all": true}: a bulk action with no filter, on purpose
BULK_FIELDS: tuple[str, ...] = (*task_listing.FILTER_NAMES, ALL)


@listing.get("/task")
def list_tasks():
    """A page of tasks, newest first: every task for an operator, its own for a token without the operator scope."""
    who = access.viewer()
    # ?status=failed&status=cancelled is status=failed,cancelled; a repeated single value then fails to parse.
    params = {name: ",".join(request.args.getlist(name)) for name in request.args}
    filters = task_listing.parse_filters(params)
    limit = task_listing.parse_limit(params.get("limit"))
    if not who.operator:
        if filters.subject is not None and filters.subject != who.subject:
            raise AuthError(403, f"a token without the [{OPERATOR_SCOPE}] scope lists only its own subject's tasks")
        filters = dataclasses.replace(filters, subject=who.subject)
    tasks, following = task_listing.list_tasks(get_db(), filters, limit, params.get("cursor"))
    response = json_response({"tasks": tasks, "next": following})
    response.headers["Cache-Control"] = "no-store"
    return response


@listing.post("/task/<task_id>/retry")
def retry_task(task_id: str):
    """Run a failed or cancelled task again, its attempts from 0. 409 for any other status."""
    who = access.asker()
    task = actions.retry_task(get_db(), task_id, who.subject, who.operator, settings().max_task_time)
    return json_response(task)


def bulk_filters() -> task_listing.Filters:
    """The filters of a bulk action's JSON body; ApiError(400) for a bad one or for none without {"all": true}."""
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, 'the request body must be a JSON object of filters, e.g. {"status": "failed"}')
    unknown = [name for name in body if name not in BULK_FIELDS]
    if unknown:
        raise ApiError(400, f"the field [{unknown[0]}] is not known; a bulk action takes {', '.join(BULK_FIELDS)}")
    everything = body.pop(ALL, False)
    if not isinstance(everything, bool):
        raise ApiError(400, f"the field [{ALL}] must be true or false")
    params: dict[str, Any] = {}
    for name, value in body.items():
        if isinstance(value, list) and name in ("status", "type"):
            if not value or not all(isinstance(item, str) and "," not in item for item in value):
                raise ApiError(400, f"the filter [{name}] must be a string or a non-empty array of names")
            value = ",".join(value)
        elif isinstance(value, int | float) and not isinstance(value, bool) and name in ("since", "until"):
            value = repr(value)
        params[name] = value
    filters = task_listing.parse_filters(params)
    if filters.is_empty() and not everything:
        raise ApiError(
            400,
            f"a bulk action needs a filter ({', '.join(task_listing.FILTER_NAMES)}), "
            'or {"all": true} to act on every task',
        )
    return filters


@listing.post("/task/bulk/cancel")
def cancel_matching():
    """Cancel every waiting or running task matching the filters (operators only)."""
    access.require_operator()
    filters = bulk_filters()
    return json_response({"cancelled": actions.cancel_matching(get_db(), filters, settings().max_task_time)})


@listing.post("/task/bulk/retry")
def retry_matching():
    """Retry every failed or cancelled task matching the filters (operators only)."""
    access.require_operator()
    filters = bulk_filters()
    return json_response({"retried": actions.retry_matching(get_db(), filters, settings().max_task_time)})


# -- the API document's part ------------------------------------------------------------

FILTER_TEXT = {
    "status": "Statuses, comma-separated (or the parameter repeated): " + ", ".join(shape.STATUSES) + ".",
    "type": "Task types, comma-separated (or the parameter repeated).",
    "since": "Created at or after this time: unix seconds, or ISO 8601 (UTC without an offset).",
    "until": "Created before this time: unix seconds, or ISO 8601 (UTC without an offset).",
    "peer": "Only the tasks sent to this peer server.",
    "subject": "Only the tasks posted with a token of this subject (a token without the operator scope: its own).",
}


def _challenge() -> dict[str, Any]:
    return {
        "WWW-Authenticate": {
            "description": '`Bearer realm="flask-tasks"`; a second one, `Basic realm="flask-tasks"`, when '
            "OPERATOR_PASSWORD is set and operator rights were missing.",
            "required": True,
            "schema": {"type": "string"},
        }
    }


def _filter_schemas() -> dict[str, Any]:
    names = {"type": "string", "minLength": 1}
    moment = {
        "oneOf": [
            {"type": "number", "minimum": 0, "description": "Unix seconds."},
            {"type": "string", "description": "Unix seconds, or ISO 8601."},
        ]
    }
    some = {"oneOf": [names, {"type": "array", "items": names, "minItems": 1}]}
    return {
        "TaskFilters": {
            "title": "TaskFilters",
            "description": "Which tasks a bulk action takes: those matching every filter given (as the listing's). "
            "With no filter at all, `all` must be true.",
            "type": "object",
            "properties": {
                "status": {**some, "description": FILTER_TEXT["status"]},
                "type": {**some, "description": FILTER_TEXT["type"]},
                "since": {**moment, "description": FILTER_TEXT["since"]},
                "until": {**moment, "description": FILTER_TEXT["until"]},
                "peer": {**names, "description": FILTER_TEXT["peer"]},
                "subject": {**names, "description": FILTER_TEXT["subject"]},
                ALL: {"type": "boolean", "description": "true: act on every task when no filter is given."},
            },
            "additionalProperties": False,
        },
        "TaskPage": {
            "title": "TaskPage",
            "type": "object",
            "properties": {
                "tasks": {"type": "array", "items": ref("Task"), "description": "Newest first."},
                "next": {
                    "type": ["string", "null"],
                    "description": "The cursor of the next page (pass it as `cursor`); null: this is the last.",
                },
            },
            "required": ["tasks", "next"],
            "additionalProperties": False,
        },
    }


def document_part(registry: Registry, settings: Settings) -> dict[str, Any]:
    """This blueprint's schemas and paths."""
    unavailable = error(apidoc.UNAVAILABLE)
    security = apidoc.OPERATOR_SECURITY  # a token's subject sees its own tasks; an operator every task
    query = [
        {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
        for name, text in FILTER_TEXT.items()
    ]
    query += [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": f"Tasks in a page: 1 to {task_listing.MAX_LIMIT}; default {task_listing.DEFAULT_LIMIT}.",
            "schema": {"type": "integer", "minimum": 1, "maximum": task_listing.MAX_LIMIT},
        },
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "description": "The `next` of the previous page, as it was given.",
            "schema": {"type": "string"},
        },
    ]
    list_operation = {
        "tags": ["tasks"],
        "operationId": "listTasks",
        "summary": "List tasks, newest first",
        "description": "An operator sees every task; a bearer token without the operator scope sees the tasks "
        "of its own subject. " + apidoc.OPERATOR_TEXT + " Pages follow each other by `cursor` (keyset pagination): "
        "a task added meanwhile neither repeats nor hides another.",
        "security": security,
        "parameters": query,
        "responses": {
            "200": json_answer(
                ref("TaskPage"),
                "A page of tasks.",
                headers={"Cache-Control": {"required": True, "schema": {"type": "string", "const": "no-store"}}},
            ),
            "400": error("A filter, `limit` or `cursor` is not valid (the message names it)."),
            "401": error("No operator credentials, and no token; or credentials that are wrong.", headers=_challenge()),
            "403": error(
                "A token without the operator scope asked for another subject's tasks; or operator rights from a "
                "password or loopback on a cross-site request, or loopback through a proxy."
            ),
            "503": unavailable,
        },
    }
    retry = {
        "tags": ["tasks"],
        "operationId": "retryTask",
        "summary": "Retry a failed or cancelled task",
        "description": "The task runs again: `waiting` from now, its attempts from 0 (so it gets its whole "
        "max_attempts again), its result, progress and cancel cleared, its expiry pushed to MAX_TASK_TIME from "
        "now; `last_error` is kept. Who may: an operator, the token subject that posted the task, or anyone for "
        "a task posted without a token. A task that a peer server ran cannot be retried here: post it again.",
        "parameters": [apidoc.TASK_ID_PARAMETER],
        "security": security,
        "responses": {
            "200": json_answer(ref("Task"), "The task, waiting again."),
            "401": error("Credentials that are not valid.", headers=_challenge()),
            "403": error("Operator rights from a password or loopback on a cross-site request."),
            "404": error("No such task: unknown, expired, or posted under another token."),
            "409": error("The task is not failed or cancelled, or a peer server ran it."),
            "503": unavailable,
        },
    }

    def bulk(operation_id: str, summary: str, key: str, what: str) -> dict[str, Any]:
        return {
            "tags": ["tasks"],
            "operationId": operation_id,
            "summary": summary,
            "description": f"{what} {apidoc.OPERATOR_TEXT} The work is done in batches of {actions.BATCH} tasks, each "
            "committed on its own; tasks created after the request began are left alone.",
            "security": security,
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("TaskFilters")}}},
            "responses": {
                "200": json_answer(
                    {
                        "type": "object",
                        "properties": {key: {"type": "integer", "minimum": 0}},
                        "required": [key],
                        "additionalProperties": False,
                    },
                    f"How many tasks were {key}.",
                ),
                "400": error('A filter is not valid, or there is none and no {"all": true}.'),
                "401": error("No operator credentials, or credentials that are wrong.", headers=_challenge()),
                "403": error("A token without the operator scope; or a cross-site request, or one through a proxy."),
                "413": error("The body is larger than MAX_CONTENT_LENGTH."),
                "415": error("The body is not sent as application/json."),
                "503": unavailable,
            },
        }

    paths = {
        "/task": {"get": list_operation},
        "/task/{task_id}/retry": {"post": retry},
        "/task/bulk/cancel": {
            "post": bulk(
                "cancelTasks",
                "Cancel every task matching filters",
                "cancelled",
                "Waiting tasks matching the filters are cancelled at once; running ones are asked to stop "
                "(counted, they end as cancelled when their handler stops them).",
            )
        },
        "/task/bulk/retry": {
            "post": bulk(
                "retryTasks",
                "Retry every failed or cancelled task matching filters",
                "retried",
                "As POST /task/{task_id}/retry for each failed or cancelled task matching the filters (those a "
                "peer server ran are left out).",
            )
        },
    }
    return {"schemas": _filter_schemas(), "paths": paths}
