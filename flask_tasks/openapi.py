"""The API's contract: GET /openapi.json (OpenAPI 3.1) and GET /docs, a page served with its own assets.

The document is built from the task registry: each task type's arguments are the JSON Schema of its
pydantic model, so it follows tasks.py. It is built once per app and kept in app.extensions.
/docs is Swagger UI from the flask-swagger-ui package's files, served by this blueprint: no CDN, and
no inline script or style, so it works under a strict Content-Security-Policy.
"""

from __future__ import annotations

import copy
import html
import json
import re
from collections.abc import Container
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, abort, current_app, send_from_directory, url_for

import flask_tasks

if TYPE_CHECKING:
    from flask_tasks.config import Settings
    from flask_tasks.registry import Registry, TaskType

docs = Blueprint("docs", __name__)

OPENAPI_VERSION = "3.1.0"
CACHE_KEY = "flask_tasks.openapi"
REF = "#/components/schemas/{model}"
JSON = "application/json"
TASK_STATUSES = ["waiting", "running", "done", "failed", "cancelled"]
COMPONENT_NAME_INVALID = re.compile(r"[^a-zA-Z0-9._-]")
# Schemas added after the task types': a model an argument uses never takes their names.
LATER_SCHEMAS = frozenset({"TaskRequest", "LegacyTaskRequest", "NewTask", "NewTasks", "TokenRequest", "Token", "JWK"})
OPTION_FIELDS = ("priority", "run_at", "delay", "max_attempts", "timeout", "idempotency_key")


# -- the document -----------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return _json(_ref("Error"), description, **extra)


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    """A copy of a JSON Schema whose $refs to renamed components point at their new names."""
    if isinstance(node, dict):
        out = {key: _rewrite_refs(value, renames) for key, value in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            out["$ref"] = REF.format(model=renames.get(name, name))
        return out
    if isinstance(node, list):
        return [_rewrite_refs(value, renames) for value in node]
    return node


def _component_name(wanted: str, taken: Container[str]) -> str:
    """A name components/schemas accepts (^[a-zA-Z0-9._-]+$) and that is not taken yet."""
    base = COMPONENT_NAME_INVALID.sub("_", wanted) or "schema"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def _add_args_schema(task_type: TaskType, schemas: dict[str, Any]) -> str:
    """Put the task type's argument schema (and the models it uses) in components; return its name."""
    schema = task_type.model.model_json_schema(ref_template=REF)
    definitions = schema.pop("$defs", {})
    # A model another task type uses too is there already; one whose name is taken by another schema is renamed.
    renames = {name: name for name, definition in definitions.items() if schemas.get(name) == definition}
    taken = set(schemas) | LATER_SCHEMAS
    for name in definitions:
        if name not in renames:
            renames[name] = _component_name(name, taken)
            taken.add(renames[name])
    for name, definition in definitions.items():
        if renames[name] not in schemas:
            schemas[renames[name]] = _rewrite_refs(definition, renames)
    args_name = _component_name(f"{task_type.name}_args", taken)
    schema = _rewrite_refs(schema, renames)
    schema["title"] = f"{task_type.name} arguments"
    if task_type.description:
        schema["description"] = task_type.description
    if task_type.protected:
        schema["x-protected"] = True
    schemas[args_name] = schema
    return args_name


class NoExample(Exception):
    """A schema too unusual to make up a value for."""


def _example(schema: dict[str, Any], schemas: dict[str, Any], depth: int = 0) -> Any:
    """A value that fits a (simple) JSON Schema of arguments: the default, else the smallest plain one."""
    if depth > 10:
        raise NoExample
    if "$ref" in schema:
        return _example(schemas[schema["$ref"].rsplit("/", 1)[1]], schemas, depth + 1)
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [branch for branch in schema[key] if branch.get("type") != "null"] or schema[key]
            return _example(branches[0], schemas, depth + 1)
    kind = schema.get("type")
    if kind in ("integer", "number"):
        value = 1 if kind == "integer" else 1.0
        value = max(value, schema.get("minimum", value))
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            value = schema["exclusiveMinimum"] + 1
        value = min(value, schema.get("maximum", value))
        fits = schema.get("minimum", value) <= value and schema.get("exclusiveMinimum", value - 1) < value
        if not fits or "exclusiveMaximum" in schema or "multipleOf" in schema:
            raise NoExample
        return value
    if kind == "string":
        if "pattern" in schema or "format" in schema:
            raise NoExample
        text = "text"
        return (text * (1 + schema.get("minLength", 0) // len(text)))[: schema.get("maxLength", len(text))] or ""
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    if kind == "array":
        count = schema.get("minItems", 0) or (1 if schema.get("maxItems", 1) else 0)
        return [_example(schema.get("items", {"type": "integer"}), schemas, depth + 1) for _ in range(count)]
    if kind == "object":
        required = schema.get("required", [])
        properties = schema.get("properties", {})
        if any(name not in properties for name in required):
            raise NoExample
        return {name: _example(properties[name], schemas, depth + 1) for name in required}
    raise NoExample


def _request_examples(registry: Registry, args_names: dict[str, str], schemas: dict[str, Any], legacy: str | None):
    """Named example bodies for POST /task: one per task type whose arguments allow one, a legacy body, a bulk one."""
    examples: dict[str, Any] = {}
    for name in registry.names():
        task_type = registry.get(name)
        try:
            args = _example(schemas[args_names[name]], schemas)
        except NoExample:
            continue
        body = {"type": name, "args": args} if args else {"type": name}
        summary = f"{name} (protected: needs a token)" if task_type is not None and task_type.protected else name
        examples[_component_name(name, examples)] = {"summary": summary, "value": body}
    if legacy is not None:
        try:
            args = _example(schemas[args_names[legacy]], schemas)
            summary = f"legacy: the arguments of {legacy}, without type"
            examples[_component_name("legacy", examples)] = {"summary": summary, "value": args}
        except NoExample:
            pass
    bulk = [example["value"] for example in examples.values() if "protected" not in example["summary"]][:2]
    if bulk:
        examples[_component_name("bulk", examples)] = {"summary": "many tasks at once", "value": bulk}
    return examples


def _option_schemas() -> dict[str, Any]:
    """The schema of each option of a task request (priority, run_at, ...), from web.TaskRequest."""
    from flask_tasks.web import TaskRequest  # web imports this module

    properties = TaskRequest.model_json_schema()["properties"]
    descriptions = {
        "priority": "Higher runs first.",
        "run_at": "When to run it, in unix seconds (not with delay).",
        "delay": "Seconds from now before it runs (not with run_at).",
        "max_attempts": "Attempts before it fails; default: the task type's, else MAX_ATTEMPTS.",
        "timeout": "Seconds an attempt may run; default: the task type's, else TASK_TIMEOUT.",
        "idempotency_key": "A second request with this key answers with the task the first one made.",
    }
    options = {}
    for name in OPTION_FIELDS:
        option = {k: v for k, v in properties[name].items() if k != "title"}
        options[name] = {**option, "description": descriptions[name]}
    return options


def _token_request() -> dict[str, Any]:
    """The body of POST /token, from web.TokenRequest."""
    from flask_tasks.web import TokenRequest

    schema = TokenRequest.model_json_schema()
    for prop in schema["properties"].values():
        prop.pop("title", None)
    return {**schema, "title": "TokenRequest"}


def _task_request(task_type: TaskType, args_name: str, options: dict[str, Any]) -> dict[str, Any]:
    args_required = any(field.is_required() for field in task_type.model.model_fields.values())
    description = task_type.description or f"A task of type {task_type.name}."
    if task_type.protected:
        description += (
            f" Protected: needs `Authorization: Bearer <JWT>` with a token that allows [{task_type.name}]"
            " (see POST /token)."
        )
    schema: dict[str, Any] = {
        "title": f"{task_type.name} task",
        "description": description,
        "type": "object",
        "properties": {"type": {"const": task_type.name}, "args": _ref(args_name), **copy.deepcopy(options)},
        "required": ["type", "args"] if args_required else ["type"],
        "additionalProperties": False,
        # run_at and delay are alternatives: a request with both (not null) is a 400.
        "not": {
            "required": ["run_at", "delay"],
            "properties": {"run_at": {"type": "number"}, "delay": {"type": "number"}},
        },
    }
    if task_type.protected:
        schema["x-protected"] = True
    return schema


def _task_schemas() -> dict[str, Any]:
    error = {
        "type": ["object", "null"],
        "properties": {"message": {"type": "string"}, "traceback": {"type": "string"}},
        "required": ["message"],
    }
    unix = {"type": "integer", "description": "Unix seconds."}
    properties = {
        "id": {"type": "string", "format": "uuid"},
        "type": {"type": "string"},
        "args": {"type": "object", "description": "The arguments, defaults filled in."},
        "status": {"type": "string", "enum": TASK_STATUSES},
        "result": {"description": "What the task returned (any JSON), once it is done; else null."},
        "error": {**error, "description": "Why it failed or was cancelled; null otherwise."},
        "last_error": {**error, "description": "The error of the last failed attempt, if any."},
        "attempts": {"type": "integer", "minimum": 0},
        "max_attempts": {"type": "integer", "minimum": 1},
        "priority": {"type": "integer"},
        "timeout": {"type": ["number", "null"], "description": "Seconds an attempt may run; null: no limit."},
        "idempotency_key": {"type": ["string", "null"]},
        "cancel_requested": {"type": "boolean"},
        "worker": {"type": ["string", "null"], "description": "The handler that ran its last attempt."},
        "created": unix,
        "run_at": {**unix, "description": "Unix seconds: when it may run."},
        "started": {"type": ["integer", "null"], "description": "Unix seconds."},
        "finished": {"type": ["integer", "null"], "description": "Unix seconds."},
        "expire": {**unix, "description": "Unix seconds: when it may be deleted."},
    }
    task = {"type": "object", "properties": properties, "required": list(properties)}
    return {
        "Task": {**task, "title": "Task", "additionalProperties": False},
        "TaskView": {
            **copy.deepcopy(task),
            "title": "Task (legacy form)",
            "description": "A task whose arguments are repeated at the top level, as the first flask-tasks "
            "answered (a body without `type`, and GET /task/{task_id}/view).",
            "additionalProperties": True,
        },
    }


def _task_type_info() -> dict[str, Any]:
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
            "require_authorization": {"type": "boolean"},
            "memory_limit_mb": {"type": ["integer", "null"]},
        },
        "required": [
            "description",
            "args",
            "json_schema",
            "max_attempts",
            "timeout",
            "isolated",
            "require_authorization",
        ],
    }


def openapi_document(registry: Registry, settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route, with each task type's arguments from the registry."""
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {"message": {"type": "string", "minLength": 1}},
            "required": ["message"],
            "additionalProperties": False,
        },
        **_task_schemas(),
        "TaskTypeInfo": _task_type_info(),
        "AllowedTasks": {
            "type": "object",
            "description": "The task types the token allows: name -> true.",
            "additionalProperties": {"const": True},
        },
    }
    options = _option_schemas()
    requests = []
    args_names: dict[str, str] = {}
    protected = registry.protected_names()
    for name in registry.names():
        task_type = registry.get(name)
        assert task_type is not None
        args_name = args_names[name] = _add_args_schema(task_type, schemas)
        request_name = _component_name(f"{name}_request", set(schemas) | LATER_SCHEMAS)
        schemas[request_name] = _task_request(task_type, args_name, options)
        requests.append(_ref(request_name))
    schemas["TaskRequest"] = {
        "title": "TaskRequest",
        "description": "A task type, its arguments and how to run it.",
        **({"oneOf": requests} if requests else {"not": {}}),  # no task types: nothing is valid
    }
    default = registry.get(settings.default_task_type)
    single = [_ref("TaskRequest")]
    if default is not None:
        legacy: dict[str, Any] = {
            "title": "Legacy task request",
            "description": f"A body without `type`: the arguments of the default task type [{default.name}] "
            "(DEFAULT_TASK_TYPE), as the first flask-tasks took them. Its answer repeats them at the top level.",
            "allOf": [_ref(args_names[default.name])],
        }
        if "type" in default.model.model_fields:
            legacy["not"] = {"required": ["type"]}
        schemas["LegacyTaskRequest"] = legacy
        single.append(_ref("LegacyTaskRequest"))
    schemas["NewTask"] = {"title": "NewTask", "oneOf": single}
    schemas["NewTasks"] = {
        "title": "NewTasks",
        "description": "Many tasks at once, stored all or nothing.",
        "type": "array",
        "items": _ref("NewTask"),
        "minItems": 1,
        "maxItems": settings.max_bulk_tasks,
    }
    schemas["TokenRequest"] = _token_request()
    schemas["Token"] = {
        "type": "object",
        "properties": {
            "access_token": {"type": "string", "description": "A JWT."},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer", "description": "Seconds."},
            "allowed_tasks": _ref("AllowedTasks"),
        },
        "required": ["access_token", "token_type", "expires_in", "allowed_tasks"],
    }
    schemas["JWK"] = {
        "type": "object",
        "properties": {name: {"type": "string"} for name in ("kty", "kid", "use", "alg", "n", "e")},
        "required": ["kty", "kid", "use", "alg", "n", "e"],
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "flask-tasks",
            "version": flask_tasks.__version__,
            "description": _description(registry, protected),
        },
        "tags": [
            {"name": "tasks", "description": "Create tasks and follow them."},
            {"name": "auth", "description": "Tokens for protected task types."},
            {"name": "docs", "description": "This document and a page to browse it."},
        ],
        "paths": _paths(
            protected,
            _request_examples(registry, args_names, schemas, default.name if default is not None else None),
        ),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from POST /token.",
                },
                "clientCredentials": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Client id as the user, client secret as the password.",
                },
            },
        },
    }


def _description(registry: Registry, protected: list[str]) -> str:
    lines = [
        "A PostgreSQL-backed task server: POST a task, GET it back until it is done.",
        "",
        'Every error is JSON `{"message": ...}`. Any operation may answer 503 while the database is down.',
        "",
        "Values are checked strictly: an integer is written without a fraction (`1`, not `1.0`), a number is "
        "never a string, and strings may not hold what PostgreSQL cannot store (`\\u0000`, a lone surrogate): "
        "each of these is a 400.",
        "",
        f"Task types: {', '.join(registry.names()) or 'none'}.",
    ]
    if protected:
        lines.append(f"Protected (need a bearer token that allows them): {', '.join(protected)}.")
    return "\n".join(lines)


def _paths(protected: list[str], examples: dict[str, Any]) -> dict[str, Any]:
    unavailable = _error("The database is unavailable; try again shortly.")
    # Every 401 says how to authenticate (RFC 6750).
    bearer_challenge = {
        "WWW-Authenticate": {
            "description": '`Bearer realm="flask-tasks"`, with `error="invalid_token"` when a token was refused.',
            "required": True,
            "schema": {"type": "string", "pattern": "^Bearer"},
        }
    }
    optional_bearer = [{}, {"bearerAuth": []}]
    task_id = {
        "name": "task_id",
        "in": "path",
        "required": True,
        "description": "The task's id, a UUID; anything else is a 404.",
        "schema": {"type": "string"},
        "example": "0b7e4a5c-8f1e-4c2a-9d3b-2f6a1c9e5d40",
    }
    links = {
        "GetTask": {"operationId": "getTask", "parameters": {"task_id": "$response.body#/id"}},
        "ViewTask": {"operationId": "viewTask", "parameters": {"task_id": "$response.body#/id"}},
        "CancelTask": {"operationId": "cancelTask", "parameters": {"task_id": "$response.body#/id"}},
    }
    bad_token = _error("The Authorization header holds a token that is not valid.", headers=bearer_challenge)
    protected_text = (
        f" Protected task types ({', '.join(protected)}) need `Authorization: Bearer <JWT>` whose token allows them."
        if protected
        else ""
    )

    def create(operation_id: str, summary: str) -> dict[str, Any]:
        return {
            "tags": ["tasks"],
            "operationId": operation_id,
            "summary": summary,
            "description": "The body is one task request, an array of them (stored all or nothing), or, "
            "without `type`, the arguments of the default task type." + protected_text,
            "security": optional_bearer,
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": {"oneOf": [_ref("NewTask"), _ref("NewTasks")]}, "examples": examples},
                },
            },
            "responses": {
                "200": _json(_ref("TaskView"), "The idempotency key was used before, for this same task: that task."),
                "201": _json(
                    {"oneOf": [_ref("TaskView"), {"type": "array", "items": _ref("TaskView")}]},
                    "Created: the task, or an array of them for an array body.",
                    links=links,
                ),
                "400": _error("The body is not a valid task request."),
                "401": _error(
                    "A protected task type without a token, or an Authorization header whose token is not valid.",
                    headers=bearer_challenge,
                ),
                "403": _error("The token does not allow that task type."),
                "409": _error("The idempotency key was used for a different task."),
                "413": _error("The body is larger than MAX_CONTENT_LENGTH."),
                "415": _error("The body is not sent as application/json."),
                "503": unavailable,
            },
        }

    def read(operation_id: str, summary: str, schema: str, description: str = "") -> dict[str, Any]:
        op = {
            "tags": ["tasks"],
            "operationId": operation_id,
            "summary": summary,
            "parameters": [task_id],
            "security": optional_bearer,
            "responses": {
                "200": _json(_ref(schema), "The task."),
                "401": bad_token,
                "404": _error("No such task: unknown, expired, or created under another token."),
                "503": unavailable,
            },
        }
        if description:
            op["description"] = description
        return op

    cancel = read("cancelTask", "Cancel a task", "Task")
    cancel["description"] = "A waiting task is cancelled at once; a running one is asked to stop."
    cancel["responses"]["409"] = _error("The task has already finished.")

    token_responses = {
        "200": _json(
            _ref("Token"),
            "An access token.",
            headers={"Cache-Control": {"required": True, "schema": {"type": "string", "const": "no-store"}}},
        ),
        "400": _error("The body is not a valid credentials request."),
        "401": _error(
            "Wrong client credentials.",
            headers={"WWW-Authenticate": {"description": "A challenge.", "schema": {"type": "string"}}},
        ),
        "413": _error("The body is larger than MAX_CONTENT_LENGTH."),
        "415": _error("The body is not sent as application/json."),
        "429": _error(
            "Too many failed attempts for that client id.",
            headers={"Retry-After": {"required": True, "description": "Seconds.", "schema": {"type": "string"}}},
        ),
        "503": _error("No signing key is configured, or the database is unavailable."),
    }
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
                    "200": _json(
                        {"type": "object", "additionalProperties": _ref("TaskTypeInfo")},
                        "Task type name -> what it takes and how it runs.",
                    ),
                    "503": unavailable,
                },
            }
        },
        "/protected": {
            "get": {
                "tags": ["auth"],
                "operationId": "getProtected",
                "summary": "What the bearer token allows",
                "security": [{"bearerAuth": []}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"allowed_tasks": _ref("AllowedTasks"), "exp": {"type": "integer"}},
                            "required": ["allowed_tasks", "exp"],
                        },
                        "The token's allowed task types and expiry (unix seconds).",
                    ),
                    "401": _error("No token, or a token that is not valid.", headers=bearer_challenge),
                    "503": unavailable,
                },
            }
        },
        "/token": {
            "post": {
                "tags": ["auth"],
                "operationId": "issueToken",
                "summary": "Get an access token (client credentials)",
                "description": "Send the client id and secret as a JSON body, or with HTTP Basic auth.",
                "security": [{}, {"clientCredentials": []}],
                "requestBody": {"required": False, "content": {JSON: {"schema": _ref("TokenRequest")}}},
                "responses": token_responses,
            }
        },
        "/.well-known/jwks.json": {
            "get": {
                "tags": ["auth"],
                "operationId": "getJwks",
                "summary": "The public keys that verify access tokens",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"keys": {"type": "array", "items": _ref("JWK")}},
                            "required": ["keys"],
                        },
                        "A JSON Web Key Set.",
                    ),
                    "503": unavailable,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["docs"],
                "operationId": "getOpenapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 document.")},
            }
        },
        "/docs": {
            "get": {
                "tags": ["docs"],
                "operationId": "getDocs",
                "summary": "A page to browse this document (Swagger UI)",
                "responses": {
                    "200": {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
    }


def document_json(app: Any = None) -> bytes:
    """The app's document as JSON, built on first use and kept in app.extensions."""
    app = app or current_app
    cached = app.extensions.get(CACHE_KEY)
    if cached is None:
        document = openapi_document(app.config["REGISTRY"], app.config["SETTINGS"])
        cached = app.extensions[CACHE_KEY] = json.dumps(document, indent=1).encode()
    return cached


@docs.get("/openapi.json")
def openapi_json() -> Response:
    return current_app.response_class(document_json(), mimetype=JSON)


# -- /docs: Swagger UI --------------------------------------------------------------


def swagger_ui_dir() -> Path:
    import flask_swagger_ui

    return Path(flask_swagger_ui.__file__).resolve().parent / "dist"


OWN_ASSETS_DIR = Path(__file__).resolve().parent / "docs_assets"
# name -> (folder, MIME type); nothing else is served.
ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("swagger", "text/javascript"),
    "swagger-ui.css": ("swagger", "text/css"),
    "favicon-32x32.png": ("swagger", "image/png"),
    "favicon-16x16.png": ("swagger", "image/png"),
    "docs-init.js": ("own", "text/javascript"),
    "docs.css": ("own", "text/css"),
}
ASSET_MAX_AGE = 3600

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flask-tasks API</title>
<link rel="stylesheet" href="{css}">
<link rel="stylesheet" href="{own_css}">
<link rel="icon" type="image/png" sizes="32x32" href="{icon32}">
<link rel="icon" type="image/png" sizes="16x16" href="{icon16}">
</head>
<body>
<div id="swagger-ui" data-url="{spec}"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""


@docs.get("/docs")
def docs_page() -> Response:
    def asset(name: str) -> str:
        return html.escape(url_for("docs.docs_asset", name=name))

    page = PAGE.format(
        css=asset("swagger-ui.css"),
        own_css=asset("docs.css"),
        icon32=asset("favicon-32x32.png"),
        icon16=asset("favicon-16x16.png"),
        spec=html.escape(url_for("docs.openapi_json")),
        bundle=asset("swagger-ui-bundle.js"),
        init=asset("docs-init.js"),
    )
    return current_app.response_class(page, mimetype="text/html")


@docs.get("/docs/assets/<name>")
def docs_asset(name: str) -> Response:
    if name not in ASSETS:
        abort(404)
    folder, mimetype = ASSETS[name]
    directory = swagger_ui_dir() if folder == "swagger" else OWN_ASSETS_DIR
    return send_from_directory(directory, name, mimetype=mimetype, max_age=ASSET_MAX_AGE)
