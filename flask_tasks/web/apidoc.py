"""The pieces of the API document (OpenAPI 3.1) every blueprint's part is made of, and the task schemas.

Each task type's arguments are the JSON Schema of its pydantic model, so the document follows tasks.py.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Container
from typing import TYPE_CHECKING, Any

from flask_tasks import shape
from flask_tasks.models import OPTION_DESCRIPTIONS, OPTION_FIELDS, TaskRequest, TokenRequest

if TYPE_CHECKING:
    from flask_tasks.registry import Registry, TaskType

REF = "#/components/schemas/{model}"
JSON = "application/json"
COMPONENT_NAME_INVALID = re.compile(r"[^a-zA-Z0-9._-]")
# Schemas added after the task types': a model an argument uses never takes their names.
LATER_SCHEMAS = frozenset(
    {"TaskRequest", "PeerTaskRequest", "LegacyTaskRequest", "NewTask", "NewTasks", "TokenRequest", "Token", "JWK"}
    | {"TaskFilters", "TaskPage", "StatusCounts", "WorkerProcess", "WorkerList", "QueueStats"}
)
# An operator's request: a token with the operator scope, the operator password (HTTP Basic), or, while
# neither is configured, nothing from loopback (web/access.py).
OPERATOR_SECURITY: list[dict[str, Any]] = [{"bearerAuth": []}, {"operatorPassword": []}, {}]
OPERATOR_TEXT = (
    "Operators only: a bearer token with the `operator` scope (a client added with "
    "`clients add NAME --operator`), or HTTP Basic with OPERATOR_PASSWORD as the password; with neither "
    "configured, a request from loopback that came through no proxy."
)
OPERATOR_CHALLENGE = {
    "WWW-Authenticate": {
        "description": 'A Bearer challenge, and `Basic realm="flask-tasks"` too when OPERATOR_PASSWORD is set.',
        "required": True,
        "schema": {"type": "string", "pattern": "^(Basic|Bearer) "},
    }
}
UNAVAILABLE = "The database is unavailable; try again shortly."
# Every 401 says how to authenticate (RFC 6750).
BEARER_CHALLENGE = {
    "WWW-Authenticate": {
        "description": '`Bearer realm="flask-tasks"`, with `error="invalid_token"` when a token was refused.',
        "required": True,
        "schema": {"type": "string", "pattern": "^Bearer"},
    }
}
OPTIONAL_BEARER: list[dict[str, Any]] = [{}, {"bearerAuth": []}]
# run_at and delay are alternatives: a request with both (not null) is a 400.
RUN_AT_AND_DELAY = {
    "required": ["run_at", "delay"],
    "properties": {"run_at": {"type": "number"}, "delay": {"type": "number"}},
}
TASK_ID_PARAMETER = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "description": "The task's id, a UUID; anything else is a 404.",
    "schema": {"type": "string"},
    "example": "0b7e4a5c-8f1e-4c2a-9d3b-2f6a1c9e5d40",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def json_answer(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def error(description: str, **extra: Any) -> dict[str, Any]:
    return json_answer(ref("Error"), description, **extra)


def rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    """A copy of a JSON Schema whose $refs to renamed components point at their new names."""
    if isinstance(node, dict):
        out = {key: rewrite_refs(value, renames) for key, value in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            out["$ref"] = REF.format(model=renames.get(name, name))
        return out
    if isinstance(node, list):
        return [rewrite_refs(value, renames) for value in node]
    return node


def component_name(wanted: str, taken: Container[str]) -> str:
    """A name components/schemas accepts (^[a-zA-Z0-9._-]+$) and that is not taken yet."""
    base = COMPONENT_NAME_INVALID.sub("_", wanted) or "schema"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def add_args_schema(task_type: TaskType, schemas: dict[str, Any]) -> str:
    """Put the task type's argument schema (and the models it uses) in components; return its name."""
    schema = task_type.model.model_json_schema(ref_template=REF)
    definitions = schema.pop("$defs", {})
    # A model another task type uses too is there already; one whose name is taken by another schema is renamed.
    renames = {name: name for name, definition in definitions.items() if schemas.get(name) == definition}
    taken = set(schemas) | LATER_SCHEMAS
    for name in definitions:
        if name not in renames:
            renames[name] = component_name(name, taken)
            taken.add(renames[name])
    for name, definition in definitions.items():
        if renames[name] not in schemas:
            schemas[renames[name]] = rewrite_refs(definition, renames)
    args_name = component_name(f"{task_type.name}_args", taken)
    schema = rewrite_refs(schema, renames)
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


def request_examples(registry: Registry, args_names: dict[str, str], schemas: dict[str, Any], legacy: str | None):
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
        examples[component_name(name, examples)] = {"summary": summary, "value": body}
    if legacy is not None:
        try:
            args = _example(schemas[args_names[legacy]], schemas)
            summary = f"legacy: the arguments of {legacy}, without type"
            examples[component_name("legacy", examples)] = {"summary": summary, "value": args}
        except NoExample:
            pass
    bulk = [example["value"] for example in examples.values() if "protected" not in example["summary"]][:2]
    if bulk:
        examples[component_name("bulk", examples)] = {"summary": "many tasks at once", "value": bulk}
    return examples


def option_schemas() -> dict[str, Any]:
    """The schema of each option of a task request (priority, run_at, ...), from models.TaskRequest."""
    properties = TaskRequest.model_json_schema()["properties"]
    options = {}
    for name in OPTION_FIELDS:
        option = {k: v for k, v in properties[name].items() if k != "title"}
        options[name] = {**option, "description": OPTION_DESCRIPTIONS[name]}
    return options


def token_request() -> dict[str, Any]:
    """The body of POST /token, from models.TokenRequest."""
    schema = TokenRequest.model_json_schema()
    for prop in schema["properties"].values():
        prop.pop("title", None)
    return {**schema, "title": "TokenRequest"}


def task_request(task_type: TaskType, args_name: str, options: dict[str, Any]) -> dict[str, Any]:
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
        "properties": {"type": {"const": task_type.name}, "args": ref(args_name), **copy.deepcopy(options)},
        "required": ["type", "args"] if args_required else ["type"],
        "additionalProperties": False,
        "not": copy.deepcopy(RUN_AT_AND_DELAY),  # run_at and delay are alternatives
    }
    if task_type.protected:
        schema["x-protected"] = True
    return schema


def peer_task_request(options: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """A request for a task that a peer server runs: its type and arguments are the peer's to check."""
    return {
        "title": "PeerTaskRequest",
        "description": "A task for a peer server (PEERS) to run. Its type and arguments are checked there; "
        "a protected type of this server still needs a token here.",
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "args": {"type": "object"},
            **copy.deepcopy(options),
            "peer": peer,
        },
        "required": ["type", "peer"],
        "additionalProperties": False,
        "not": copy.deepcopy(RUN_AT_AND_DELAY),
    }


def task_schemas() -> dict[str, Any]:
    """Task, and TaskView: a task with its arguments repeated at the top level."""
    task = shape.task_schema()
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
