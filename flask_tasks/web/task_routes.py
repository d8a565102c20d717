"""Task routes: create tasks, read them back, cancel them, list the task types; and their part of the API document."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, g

from flask_tasks import actions, db, enqueue
from flask_tasks.config import Settings
from flask_tasks.models import ApiError
from flask_tasks.registry import Registry
from flask_tasks.web import apidoc
from flask_tasks.web.access import asker
from flask_tasks.web.apidoc import JSON, error, json_answer, ref
from flask_tasks.web.pool import get_db, group_commit
from flask_tasks.web.request_io import (
    json_body,
    json_response,
    prefers_minimal,
    registry,
    request_claims,
    request_subject,
    settings,
)

tasks = Blueprint("tasks", __name__)


@tasks.post("/task/new")
@tasks.post("/task")
def create_task():
    """One task from a JSON object, or many at once, all or nothing, from a JSON array of them."""
    body = json_body()
    config: Settings = settings()
    news = enqueue.parse_new_tasks(body, registry(), config, request_claims(), g.body_bytes)
    minimal = prefers_minimal()
    stored = enqueue.store_tasks(get_db, news, config, request_subject(), not minimal, group_commit())
    answers = [
        enqueue.legacy_form(task) if new.legacy and not minimal else task
        for (task, _), new in zip(stored, news, strict=True)
    ]
    if isinstance(body, list):
        response = json_response(answers, 201)
    else:
        response = json_response(answers[0], 201 if stored[0][1] else 200)
    if minimal:
        response.headers["Preference-Applied"] = "return=minimal"
    return response


def find_task(task_id: str) -> dict[str, Any]:
    """The task, if the request may see it; else ApiError 404."""
    try:
        key = uuid.UUID(task_id)
    except ValueError:
        raise ApiError(404, f"task [{task_id}] not found: task ids are UUIDs") from None
    # Another subject's task answers as if it did not exist: 404, not 403.
    who = asker()  # a bad token (or password) is a 401 before any database work
    rows = db.run_dicts(get_db(), "get_task", {"id": key, "subject": who.subject, "operator": who.operator})
    if not rows:
        seconds = settings().max_task_time
        raise ApiError(404, f"task [{task_id}] not found: it may have expired (tasks are kept {seconds} s)")
    return rows[0]


@tasks.post("/task/<task_id>/cancel")
def cancel_task(task_id: str):
    """Cancel a waiting task at once; ask a running one to stop. 409 if it has finished."""
    who = asker()  # a bad token (or password) is a 401 before any database work
    task = actions.cancel_task(get_db(), task_id, who.subject, who.operator, settings().max_task_time)
    return json_response(task)


@tasks.get("/task/<task_id>")
def get_task(task_id: str):
    return json_response(find_task(task_id))


@tasks.get("/task/<task_id>/view")
def view_task(task_id: str):
    return json_response(enqueue.legacy_form(find_task(task_id)))


@tasks.get("/tasks")
def list_task_types():
    return json_response(registry().describe())


# -- the API document's part ------------------------------------------------------------


def task_type_info() -> dict[str, Any]:
    """The schema of one entry of GET /tasks."""
    return {
        "type": "object",
        "properties": {
            "description": {"type": "string"},
            "args": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"type": {"type": "string"}, "required": {"type": "boolean"}, "default": {}},
                    "required": ["type", "required"],
                },
            },
            "json_schema": {"type": "object", "description": "The JSON Schema of its arguments."},
            "max_attempts": {"type": ["integer", "null"]},
            "timeout": {"type": ["number", "null"]},
            "isolated": {"type": "boolean"},
            "protected": {"type": "boolean", "description": "Posting it needs a token that allows it."},
            "require_authorization": {"type": "boolean", "description": "The same as protected (flask-tasks v2)."},
            "memory_limit_mb": {"type": ["integer", "null"]},
            "cron": {
                "type": ["string", "null"],
                "description": "When a janitor enqueues it by itself (@task(cron=...)); null: never.",
            },
            "source": {
                "type": "object",
                "description": "Where the type came from: a module of TASKS_MODULE, or a taskpack (pack, version).",
                "properties": {"module": {"type": "string"}, "pack": {"type": "string"}, "version": {"type": "string"}},
                "required": ["module"],
            },
        },
        "required": ["description", "args", "json_schema", "max_attempts", "timeout", "isolated", "protected"],
    }


def document_part(registry: Registry, settings: Settings) -> dict[str, Any]:
    """This blueprint's schemas and paths, with each task type's arguments from the registry."""
    schemas: dict[str, Any] = {**apidoc.task_schemas(), "TaskTypeInfo": task_type_info()}
    schemas["TaskId"] = {
        "title": "TaskId",
        "description": "A task answered by its id alone (`Prefer: return=minimal`).",
        "type": "object",
        "properties": {"id": {"type": "string", "format": "uuid"}},
        "required": ["id"],
        "additionalProperties": False,
    }
    options = apidoc.option_schemas()
    peer_option = options.pop("peer")  # a request with a peer has a form of its own, below
    requests = []
    args_names: dict[str, str] = {}
    for name in registry.names():
        task_type = registry.get(name)
        assert task_type is not None
        args_name = args_names[name] = apidoc.add_args_schema(task_type, schemas)
        request_name = apidoc.component_name(f"{name}_request", set(schemas) | apidoc.LATER_SCHEMAS)
        schemas[request_name] = apidoc.task_request(task_type, args_name, options)
        requests.append(ref(request_name))
    if settings.peers:
        peer = {"type": "string", "enum": sorted(settings.peers), "description": peer_option["description"]}
        schemas["PeerTaskRequest"] = apidoc.peer_task_request(options, peer)
        requests.append(ref("PeerTaskRequest"))
    schemas["TaskRequest"] = {
        "title": "TaskRequest",
        "description": "A task type, its arguments and how to run it.",
        **({"oneOf": requests} if requests else {"not": {}}),  # no task types: nothing is valid
    }
    default = registry.get(settings.default_task_type)
    single = [ref("TaskRequest")]
    if default is not None:
        legacy: dict[str, Any] = {
            "title": "Legacy task request",
            "description": f"A body without `type`: the arguments of the default task type [{default.name}] "
            "(DEFAULT_TASK_TYPE), as the first flask-tasks took them. Its answer repeats them at the top level.",
            "allOf": [ref(args_names[default.name])],
        }
        if "type" in default.model.model_fields:
            legacy["not"] = {"required": ["type"]}
        schemas["LegacyTaskRequest"] = legacy
        single.append(ref("LegacyTaskRequest"))
    schemas["NewTask"] = {"title": "NewTask", "oneOf": single}
    schemas["NewTasks"] = {
        "title": "NewTasks",
        "description": "Many tasks at once, stored all or nothing.",
        "type": "array",
        "items": ref("NewTask"),
        "minItems": 1,
        "maxItems": settings.max_bulk_tasks,
    }
    examples = apidoc.request_examples(registry, args_names, schemas, default.name if default is not None else None)
    return {"schemas": schemas, "paths": _paths(registry.protected_names(), examples)}


def _paths(protected: list[str], examples: dict[str, Any]) -> dict[str, Any]:
    unavailable = error(apidoc.UNAVAILABLE)
    task_id = apidoc.TASK_ID_PARAMETER
    links = {
        "GetTask": {"operationId": "getTask", "parameters": {"task_id": "$response.body#/id"}},
        "ViewTask": {"operationId": "viewTask", "parameters": {"task_id": "$response.body#/id"}},
        "CancelTask": {"operationId": "cancelTask", "parameters": {"task_id": "$response.body#/id"}},
    }
    bad_token = error("The Authorization header holds a token that is not valid.", headers=apidoc.BEARER_CHALLENGE)
    protected_text = (
        f" Protected task types ({', '.join(protected)}) need `Authorization: Bearer <JWT>` whose token allows them."
        if protected
        else ""
    )

    task_id_only = ref("TaskId")
    applied = {
        "Preference-Applied": {
            "description": "`return=minimal` when the answer holds only the ids.",
            "schema": {"type": "string", "enum": ["return=minimal"]},
        }
    }

    def create(operation_id: str, summary: str) -> dict[str, Any]:
        return {
            "tags": ["tasks"],
            "operationId": operation_id,
            "summary": summary,
            "description": "The body is one task request, an array of them (stored all or nothing), or, "
            "without `type`, the arguments of the default task type." + protected_text,
            "parameters": [
                {
                    "name": "Prefer",
                    "in": "header",
                    "required": False,
                    "description": "`return=minimal` (RFC 7240): answer each task by its id alone, "
                    "which spares building and sending the whole task (a large share of a bulk request's time).",
                    "schema": {"type": "string", "examples": ["return=minimal"]},
                }
            ],
            "security": apidoc.OPTIONAL_BEARER,
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": {"oneOf": [ref("NewTask"), ref("NewTasks")]}, "examples": examples},
                },
            },
            "responses": {
                "200": json_answer(
                    {"oneOf": [ref("TaskView"), task_id_only]},
                    "The idempotency key was used before, for this same task: that task (its id alone with "
                    "`Prefer: return=minimal`).",
                    headers=applied,
                ),
                "201": json_answer(
                    {
                        "oneOf": [
                            ref("TaskView"),
                            {"type": "array", "items": ref("TaskView")},
                            task_id_only,
                            {"type": "array", "items": task_id_only},
                        ]
                    },
                    "Created: the task, or an array of them for an array body; with `Prefer: return=minimal`, "
                    "only their ids.",
                    links=links,
                    headers=applied,
                ),
                "400": error("The body is not a valid task request."),
                "401": error(
                    "A protected task type without a token, or an Authorization header whose token is not valid.",
                    headers=apidoc.BEARER_CHALLENGE,
                ),
                "403": error("The token does not allow that task type."),
                "409": error("The idempotency key was used for a different task."),
                "413": error("The body is larger than MAX_CONTENT_LENGTH."),
                "415": error("The body is not sent as application/json."),
                "503": unavailable,
            },
        }

    def read(operation_id: str, summary: str, schema: str, description: str = "") -> dict[str, Any]:
        op = {
            "tags": ["tasks"],
            "operationId": operation_id,
            "summary": summary,
            "parameters": [task_id],
            "security": apidoc.OPTIONAL_BEARER,
            "responses": {
                "200": json_answer(ref(schema), "The task."),
                "401": bad_token,
                "404": error("No such task: unknown, expired, or created under another token."),
                "503": unavailable,
            },
        }
        if description:
            op["description"] = description
        return op

    cancel = read("cancelTask", "Cancel a task", "Task")
    cancel["description"] = "A waiting task is cancelled at once; a running one is asked to stop."
    cancel["responses"]["409"] = error("The task has already finished.")
    return {
        "/task": {"post": create("createTask", "Create a task, or many")},
        "/task/new": {"post": create("createTaskNew", "Create a task, or many (the first flask-tasks' path)")},
        "/task/{task_id}": {"get": read("getTask", "Get a task", "Task")},
        "/task/{task_id}/view": {
            "get": read(
                "viewTask",
                "Get a task in the legacy form",
                "TaskView",
                "The task, with its arguments repeated at the top level as the first flask-tasks showed them.",
            )
        },
        "/task/{task_id}/cancel": {"post": cancel},
        "/tasks": {
            "get": {
                "tags": ["tasks"],
                "operationId": "listTaskTypes",
                "summary": "List the task types",
                "responses": {
                    "200": json_answer(
                        {"type": "object", "additionalProperties": ref("TaskTypeInfo")},
                        "Task type name -> what it takes and how it runs.",
                    ),
                    "503": unavailable,
                },
            }
        },
    }
