"""nask-task's API shape over the same tasks: POST/GET /api/tasks and GET /api/tasks/<id>; and their document part.

nask-task (a FastAPI and Celery server) took `{"type", "notify_url", "payload": {"input": X}}` for task
types of one argument and answered Celery's status words. Here such a request becomes an ordinary task
request, `{"type": T, "args": {<T's one parameter>: X}, "notify_url": ...}`, checked and stored by the
same code as POST /task (flask_tasks.enqueue); the answers are the stored task in nask-task's shape,
with its result and error added.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request

from flask_tasks import db, enqueue, shape
from flask_tasks.auth import AuthError
from flask_tasks.config import Settings
from flask_tasks.models import ApiError
from flask_tasks.registry import Registry, TaskType
from flask_tasks.web import apidoc
from flask_tasks.web.apidoc import JSON, error, json_answer, ref
from flask_tasks.web.pool import get_db
from flask_tasks.web.request_io import (
    json_body,
    json_response,
    registry,
    request_claims,
    request_subject,
    settings,
)
from flask_tasks.web.task_routes import find_task

nask = Blueprint("nask", __name__)

# Our status words -> the Celery words nask-task answered.
NASK_STATUS: dict[str, str] = {
    shape.WAITING: "PENDING",
    shape.RUNNING: "STARTED",
    shape.DONE: "SUCCESS",
    shape.FAILED: "FAILURE",
    shape.CANCELLED: "REVOKED",
}
assert set(NASK_STATUS) == set(shape.STATUSES), "every status needs its nask-task word"

REQUEST_FIELDS = ("type", "notify_url", "payload")
PAYLOAD_FIELDS = ("input",)
DEFAULT_LIMIT, MAX_LIMIT = 100, 500
EXAMPLE_BODY = '{"type": "prime", "payload": {"input": 100}}'


def nask_form(task: dict[str, Any]) -> dict[str, Any]:
    """A task (as GET /task/<id> answers it) in nask-task's shape, with its result and error."""
    args, notify = task["args"], task["notify"]
    return {
        "id": task["id"],
        "type": task["type"],
        "status": NASK_STATUS[task["status"]],
        "notify_url": None if notify is None else notify["url"],
        # A task posted at POST /task may have no argument or several: then input is the whole args object.
        "payload": {"input": next(iter(args.values())) if len(args) == 1 else args},
        "result": task["result"],
        "error": task["error"],
    }


def the_parameter(task_type: TaskType) -> str:
    """The name of the task type's one parameter; ApiError(400) if it takes none or several."""
    params = list(task_type.model.model_fields)
    if len(params) != 1:
        takes = ", ".join(params) if params else "no arguments"
        raise ApiError(
            400,
            "nask-task's shape needs a task type with one argument (its payload.input): "
            f"[{task_type.name}] takes {takes}; post it to /task with its args instead",
        )
    return params[0]


def task_request(body: Any) -> tuple[dict[str, Any], int]:
    """A nask-task request as a task request for enqueue.parse_new_task, and how much longer than
    the body its args may be (the parameter's name stands in for "input"); ApiError(400) if it is not one."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, e.g. {EXAMPLE_BODY}")
    for field in body:
        if field not in REQUEST_FIELDS:
            raise ApiError(
                400, f"the field [{field}] is not known; a nask-task request has {', '.join(REQUEST_FIELDS)}."
            )
    if "type" not in body:
        raise ApiError(400, "the field [type] is required.")
    type_name = body["type"]
    if not isinstance(type_name, str):
        raise ApiError(400, "the field [type] must be a string.")
    task_type = registry().get(type_name)
    if task_type is None:
        raise ApiError(400, f"task type [{type_name}] doesnt exist")
    param = the_parameter(task_type)
    if "payload" not in body:
        raise ApiError(400, 'the field [payload] is required: {"input": <the argument>}.')
    payload = body["payload"]
    if not isinstance(payload, dict):
        raise ApiError(400, 'the field [payload] must be a JSON object: {"input": <the argument>}.')
    for field in payload:
        if field not in PAYLOAD_FIELDS:
            raise ApiError(400, f"the field [payload.{field}] is not known; a payload has input.")
    if "input" not in payload:
        raise ApiError(400, "the field [payload.input] is required.")
    mapped: dict[str, Any] = {"type": type_name, "args": {param: payload["input"]}}
    if "notify_url" in body:
        mapped["notify_url"] = body["notify_url"]
    return mapped, max(0, len(param.encode()) - len("input"))


@nask.post("/api/tasks")
def create_nask_task():
    """One task in nask-task's shape; the answer is 201 with it in that shape."""
    body = json_body()
    mapped, longer = task_request(body)
    config: Settings = settings()
    new = enqueue.parse_new_task(mapped, registry(), config, request_claims(), g.body_bytes + longer)
    [(task, _)] = enqueue.store_tasks(get_db, [new], config, request_subject())
    return json_response(nask_form(task), 201)


@nask.get("/api/tasks/<task_id>")
def get_nask_task(task_id: str):
    return json_response(nask_form(find_task(task_id)))


def list_limit() -> int:
    """The `limit` query parameter: 1..MAX_LIMIT, DEFAULT_LIMIT without one; ApiError(400) otherwise."""
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    # isdigit() alone takes other scripts' digits; the length bound spares int() a huge string.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= MAX_LIMIT):
        raise ApiError(400, f"the query parameter [limit] must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


@nask.get("/api/tasks")
def list_nask_tasks():
    """The newest tasks of the token's subject. A task id is a capability: there is no listing without a token."""
    subject = request_subject()  # a bad token is a 401 here
    if subject is None:
        raise AuthError(
            401,
            "listing tasks needs a token: send Authorization: Bearer <token> (get one at POST /token); "
            "a task posted without a token is read by its id",
        )
    limit = list_limit()
    rows = db.run_dicts(get_db(), "list_subject_tasks", {"subject": subject, "limit": limit})
    return json_response({"tasks": [nask_form(row) for row in rows]})


# -- the API document's part ------------------------------------------------------------

_FIELD_SCHEMAS = {field.name: field.schema for field in shape.FIELDS}


def nask_task_schema() -> dict[str, Any]:
    return {
        "title": "NaskTask",
        "description": "A task in nask-task's shape, with its result and error added.",
        "type": "object",
        "properties": {
            "id": dict(_FIELD_SCHEMAS["id"]),
            "type": {"type": "string"},
            "status": {
                "type": "string",
                "enum": list(NASK_STATUS.values()),
                "description": "; ".join(f"{ours} -> {theirs}" for ours, theirs in NASK_STATUS.items()),
            },
            "notify_url": {"type": ["string", "null"]},
            "payload": {
                "type": "object",
                "properties": {
                    "input": {
                        "description": "The task's one argument. A task posted at POST /task whose type takes "
                        "no argument or several shows its whole arguments object here."
                    }
                },
                "required": ["input"],
                "additionalProperties": False,
            },
            "result": dict(_FIELD_SCHEMAS["result"]),
            "error": dict(_FIELD_SCHEMAS["error"]),
        },
        "required": ["id", "type", "status", "notify_url", "payload", "result", "error"],
        "additionalProperties": False,
    }


def input_schema(task_type: TaskType, param: str, schemas: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of the parameter; models it uses go into schemas under names of this part's own."""
    schema = task_type.model.model_json_schema(ref_template=apidoc.REF)
    renames: dict[str, str] = {}
    definitions = schema.pop("$defs", {})
    for name in definitions:
        # "nask." cannot start a pydantic model's name, nor another part's schema names.
        renames[name] = apidoc.component_name(f"nask.{task_type.name}.{name}", schemas)
        schemas[renames[name]] = {}
    for name, definition in definitions.items():
        schemas[renames[name]] = apidoc.rewrite_refs(definition, renames)
    return apidoc.rewrite_refs(schema["properties"][param], renames)


def request_schema(task_type: TaskType, param: str, notify_url: dict[str, Any], schemas: dict[str, Any]):
    description = task_type.description or f"A task of type {task_type.name}."
    description += f" payload.input is its argument [{param}]."
    if task_type.protected:
        description += f" Protected: needs `Authorization: Bearer <JWT>` with a token that allows [{task_type.name}]."
    return {
        "title": f"{task_type.name} (nask-task's shape)",
        "description": description,
        "type": "object",
        "properties": {
            "type": {"const": task_type.name},
            "notify_url": notify_url,
            "payload": {
                "type": "object",
                "properties": {"input": input_schema(task_type, param, schemas)},
                "required": ["input"],
                "additionalProperties": False,
            },
        },
        "required": ["type", "payload"],
        "additionalProperties": False,
        **({"x-protected": True} if task_type.protected else {}),
    }


def document_part(registry: Registry, settings: Settings) -> dict[str, Any]:
    """This blueprint's schemas and paths: a request form for each task type of one argument."""
    schemas: dict[str, Any] = {}
    notify_url = apidoc.option_schemas()["notify_url"]
    forms = []
    for name in registry.names():
        task_type = registry.get(name)
        assert task_type is not None
        params = list(task_type.model.model_fields)
        if len(params) == 1:
            forms.append(request_schema(task_type, params[0], notify_url, schemas))
    schemas["NaskTaskRequest"] = {
        "title": "NaskTaskRequest",
        "description": "nask-task's task request: a task type of one argument, that argument as payload.input, "
        "and optionally a notify_url (needs WEBHOOK_SECRET on the server).",
        **({"oneOf": forms} if forms else {"not": {}}),  # no task type of one argument: nothing is valid
    }
    schemas["NaskTask"] = nask_task_schema()
    schemas["NaskTaskList"] = {
        "title": "NaskTaskList",
        "type": "object",
        "properties": {"tasks": {"type": "array", "items": ref("NaskTask"), "maxItems": MAX_LIMIT}},
        "required": ["tasks"],
        "additionalProperties": False,
    }
    examples = {}
    for form in forms:
        try:
            value = apidoc._example(form["properties"]["payload"]["properties"]["input"], schemas)
        except apidoc.NoExample:
            continue
        name = form["properties"]["type"]["const"]
        examples[apidoc.component_name(name, examples)] = {
            "summary": f"{name} (protected: needs a token)" if form.get("x-protected") else name,
            "value": {"type": name, "payload": {"input": value}},
        }
    tags = [{"name": "nask-task", "description": "nask-task's API shape over the same tasks."}]
    return {"schemas": schemas, "paths": _paths(examples), "tags": tags}


def _paths(examples: dict[str, Any]) -> dict[str, Any]:
    unavailable = error(apidoc.UNAVAILABLE)
    bad_token = error("The Authorization header holds a token that is not valid.", headers=apidoc.BEARER_CHALLENGE)
    body: dict[str, Any] = {"schema": ref("NaskTaskRequest")}
    if examples:
        body["examples"] = examples
    task_id = apidoc.TASK_ID_PARAMETER
    return {
        "/api/tasks": {
            "post": {
                "tags": ["nask-task"],
                "operationId": "createNaskTask",
                "summary": "Create a task (nask-task's shape)",
                "description": "For a task type of one argument: `payload.input` is that argument. The task is "
                "the same as POST /task makes, and GET /task/{task_id} reads it too.",
                "security": apidoc.OPTIONAL_BEARER,
                "requestBody": {"required": True, "content": {JSON: body}},
                "responses": {
                    "201": json_answer(
                        ref("NaskTask"),
                        "Created: the task in nask-task's shape.",
                        links={
                            "GetNaskTask": {
                                "operationId": "getNaskTask",
                                "parameters": {"task_id": "$response.body#/id"},
                            }
                        },
                    ),
                    "400": error(
                        "The body is not a valid nask-task request, or its type does not take exactly one argument."
                    ),
                    "401": error(
                        "A protected task type without a token, or an Authorization header whose token is not valid.",
                        headers=apidoc.BEARER_CHALLENGE,
                    ),
                    "403": error("The token does not allow that task type."),
                    "413": error("The body is larger than MAX_CONTENT_LENGTH."),
                    "415": error("The body is not sent as application/json."),
                    "503": unavailable,
                },
            },
            "get": {
                "tags": ["nask-task"],
                "operationId": "listNaskTasks",
                "summary": "List the token subject's tasks (nask-task's shape)",
                "description": "The newest tasks posted with a token of the request's subject, newest first. "
                "A task id is a capability: tasks posted without a token are never listed.",
                "security": [{"bearerAuth": []}],
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": f"How many tasks at most (default {DEFAULT_LIMIT}).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                    }
                ],
                "responses": {
                    "200": json_answer(ref("NaskTaskList"), "The tasks, newest first."),
                    "400": error(f"limit is not an integer from 1 to {MAX_LIMIT}."),
                    "401": error("No token, or a token that is not valid.", headers=apidoc.BEARER_CHALLENGE),
                    "503": unavailable,
                },
            },
        },
        "/api/tasks/{task_id}": {
            "get": {
                "tags": ["nask-task"],
                "operationId": "getNaskTask",
                "summary": "Get a task (nask-task's shape)",
                "parameters": [task_id],
                "security": apidoc.OPTIONAL_BEARER,
                "responses": {
                    "200": json_answer(ref("NaskTask"), "The task."),
                    "401": bad_token,
                    "404": error("No such task: unknown, expired, or created under another token."),
                    "503": unavailable,
                },
            }
        },
    }
