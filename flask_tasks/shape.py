"""What a task is to the outside: its status words and the fields the API answers with.

The one definition: the SQL that reads a task (queries.sql's {task_columns}), the answer to a
new task, the API document and the tests all take the fields and statuses from here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

WAITING, RUNNING, DONE, FAILED, CANCELLED = "waiting", "running", "done", "failed", "cancelled"
STATUSES: tuple[str, ...] = (WAITING, RUNNING, DONE, FAILED, CANCELLED)
ACTIVE: tuple[str, ...] = (WAITING, RUNNING)  # may still change
FINAL: tuple[str, ...] = (DONE, FAILED, CANCELLED)  # will not change again


class Field(NamedTuple):
    name: str
    sql: str  # how the task_columns fragment reads it from a row of tasks
    schema: dict[str, Any]  # its JSON Schema in the API document


def _unix(sql: str) -> str:
    return f"floor(extract(epoch FROM {sql}))::bigint"


_ERROR = {
    "type": ["object", "null"],
    "properties": {"message": {"type": "string"}, "traceback": {"type": "string"}},
    "required": ["message"],
}
_UNIX = {"type": "integer", "description": "Unix seconds."}
_UNIX_OR_NULL = {"type": ["integer", "null"], "description": "Unix seconds."}

# In the order the API shows them.
FIELDS: tuple[Field, ...] = (
    Field("id", "id::text", {"type": "string", "format": "uuid"}),
    Field("type", "type", {"type": "string"}),
    Field("args", "args", {"type": "object", "description": "The arguments, defaults filled in."}),
    Field("status", "status", {"type": "string", "enum": list(STATUSES)}),
    Field("result", "result", {"description": "What the task returned (any JSON), once it is done; else null."}),
    Field(
        "error",
        f"CASE WHEN status IN ('{FAILED}', '{CANCELLED}') THEN last_error END",
        {**_ERROR, "description": "Why it failed or was cancelled; null otherwise."},
    ),
    Field("last_error", "last_error", {**_ERROR, "description": "The error of the last failed attempt, if any."}),
    Field("attempts", "attempts", {"type": "integer", "minimum": 0}),
    Field("max_attempts", "max_attempts", {"type": "integer", "minimum": 1}),
    Field("priority", "priority", {"type": "integer"}),
    Field(
        "timeout", "timeout", {"type": ["number", "null"], "description": "Seconds an attempt may run; null: no limit."}
    ),
    Field("idempotency_key", "idempotency_key", {"type": ["string", "null"]}),
    Field("cancel_requested", "cancel_requested", {"type": "boolean"}),
    Field("worker", "worker", {"type": ["string", "null"], "description": "The handler that ran its last attempt."}),
    Field("created", _unix("created"), _UNIX),
    Field("run_at", _unix("run_at"), {**_UNIX, "description": "Unix seconds: when it may run."}),
    Field("started", _unix("started"), _UNIX_OR_NULL),
    Field("finished", _unix("finished"), _UNIX_OR_NULL),
    Field("expire", _unix("expire"), {**_UNIX, "description": "Unix seconds: when it may be deleted."}),
    Field(
        "notify",
        "CASE WHEN notify_url IS NOT NULL THEN jsonb_build_object('url', notify_url, 'status', notify_status,"
        " 'attempts', notify_attempts, 'last_status', notify_last_status, 'last_error', notify_last_error) END",
        {
            "type": ["object", "null"],
            "description": "The delivery of the finished task to its notify_url; null without one.",
            "properties": {
                "url": {"type": "string"},
                "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                "attempts": {"type": "integer", "minimum": 0},
                "last_status": {"type": ["integer", "null"], "description": "The HTTP status of the last attempt."},
                "last_error": {"type": ["string", "null"]},
            },
            "required": ["url", "status", "attempts", "last_status", "last_error"],
        },
    ),
    Field(
        "peer",
        "CASE WHEN peer IS NOT NULL THEN jsonb_build_object('name', peer, 'task_id', peer_task_id) END",
        {
            "type": ["object", "null"],
            "description": "The peer server that runs the task, and its id there once sent; null: runs here.",
            "properties": {"name": {"type": "string"}, "task_id": {"type": ["string", "null"]}},
            "required": ["name", "task_id"],
        },
    ),
    Field(
        "progress",
        "progress",
        {
            "type": ["object", "null"],
            "description": "What the task last reported with current_task().progress(); null: nothing yet.",
            "properties": {
                "fraction": {"type": "number", "minimum": 0, "maximum": 1},
                "message": {"type": ["string", "null"]},
                "updated": {"type": "number", "description": "Unix seconds."},
            },
            "required": ["fraction", "message", "updated"],
        },
    ),
)
FIELD_NAMES: tuple[str, ...] = tuple(field.name for field in FIELDS)
TASK_COLUMNS_SQL: str = ",\n".join(f"{field.sql} AS {field.name}" for field in FIELDS)

# Delivery of a task's outcome to its notify_url.
NOTIFY_PENDING, NOTIFY_DELIVERED, NOTIFY_FAILED = "pending", "delivered", "failed"


def task_schema() -> dict[str, Any]:
    """The JSON Schema of a task as the API answers it."""
    return {
        "type": "object",
        "properties": {field.name: dict(field.schema) for field in FIELDS},
        "required": list(FIELD_NAMES),
    }


def new_task(task_id: str, fields: dict[str, Any], times: tuple[int, int, int]) -> dict[str, Any]:
    """A task just stored, as get_task would read it back: what was sent and the times PostgreSQL set.

    Built here rather than returned by the insert: PostgreSQL's row_to_json cost more
    than the insert itself (9 of 22 µs a task in a bulk request).
    """
    created, run_at, expire = times
    timeout = fields.get("timeout")
    notify = peer = None
    if fields.get("notify_url") is not None:
        # In the order PostgreSQL's jsonb keeps the keys of get_task's object (shorter first), as GET shows them.
        notify = {"url": fields["notify_url"], "status": NOTIFY_PENDING, "attempts": 0}
        notify |= {"last_error": None, "last_status": None}
    if fields.get("peer") is not None:
        peer = {"name": fields["peer"], "task_id": None}
    return {
        "id": task_id,
        "type": fields["type"],
        "args": fields["args"],
        "status": WAITING,
        "result": None,
        "error": None,
        "last_error": None,
        "attempts": 0,
        "max_attempts": fields["max_attempts"],
        "priority": fields.get("priority", 0),
        "timeout": None if timeout is None else float(timeout),  # a float8 column
        "idempotency_key": fields.get("idempotency_key"),
        "cancel_requested": False,
        "worker": None,
        "created": created,
        "run_at": run_at,
        "started": None,
        "finished": None,
        "expire": expire,
        "notify": notify,
        "peer": peer,
        "progress": None,
    }
