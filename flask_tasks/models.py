"""The request bodies the API takes, and the error a client gets for one that does not fit.

Both the routes (to check a body) and the API document (to describe it) read these models.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic reads typing's TypedDict only from Python 3.12 on

TEN_YEARS = 10 * 365 * 86400.0
YEAR_9999 = 253402300799.0  # the last unix second PostgreSQL's to_timestamp and Python agree on


class ApiError(Exception):
    """An error answered as {"message": ...} with a status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class TaskRequest(BaseModel):
    """The body of POST /task: a task type, its arguments and how to run it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str
    args: dict[str, Any] = {}
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    run_at: Annotated[float, Field(ge=0, le=YEAR_9999)] | None = None
    delay: Annotated[float, Field(ge=0, le=TEN_YEARS)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=1000)] | None = None
    timeout: Annotated[float, Field(gt=0, le=TEN_YEARS)] | None = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    notify_url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    peer: Annotated[str, Field(min_length=1, max_length=100)] | None = None


def fields_of(model: type[BaseModel]) -> Any:
    """A model's fields as a TypedDict checked the same way by pydantic (the same constraints, strictness and
    errors; those with a default need not be given): checking a body with it makes a plain dict of the
    fields given, in a third of the time a model takes, which counts when a bulk request checks 1,000."""
    decorators = model.__pydantic_decorators__
    if (
        decorators.field_validators
        or decorators.model_validators
        or any(field.alias or field.default_factory for field in model.model_fields.values())
    ):
        raise TypeError(f"{model.__name__}: fields_of copies fields, not validators, aliases or default factories")
    fields = {
        name: Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        for name, field in model.model_fields.items()
    }
    given = TypedDict(
        model.__name__ + "Fields",
        {n: t if model.model_fields[n].is_required() else NotRequired[t] for n, t in fields.items()},
    )  # type: ignore[misc]
    given.__pydantic_config__ = model.model_config  # type: ignore[attr-defined]
    return given


# What enqueue checks a task request with: TaskRequest's fields, as a dict of those given.
TaskRequestFields = fields_of(TaskRequest)

# What each option of a task request means, for the API document.
OPTION_DESCRIPTIONS = {
    "priority": "Higher runs first.",
    "run_at": "When to run it, in unix seconds (not with delay).",
    "delay": "Seconds from now before it runs (not with run_at).",
    "max_attempts": "Attempts before it fails; default: the task type's, else MAX_ATTEMPTS.",
    "timeout": "Seconds an attempt may run; default: the task type's, else TASK_TIMEOUT.",
    "idempotency_key": "A second request with this key answers with the task the first one made.",
    "notify_url": "Once the task is done, failed or cancelled, the server POSTs it here (signed as Standard "
    "Webhooks specify, retried until a 2xx). Needs WEBHOOK_SECRET on the server.",
    "peer": "The name of a peer server (PEERS) that runs the task; this server follows it there.",
}
OPTION_FIELDS = tuple(OPTION_DESCRIPTIONS)
REQUEST_FIELDS = ", ".join(TaskRequest.model_fields)


class TokenRequest(BaseModel):
    """The body of POST /token: client credentials (or send them with HTTP Basic auth)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    client_id: Annotated[str, Field(min_length=1, max_length=200)]
    client_secret: Annotated[str, Field(min_length=1, max_length=1000)]


def request_error(error: Any, known: str = f"a task request has {REQUEST_FIELDS}") -> str:
    """A client's message for pydantic's first error about a body."""
    field = ".".join(str(part) for part in error["loc"]) or "?"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"the field [{field}] is not known; {known}."
    if kind == "missing":
        return f"the field [{field}] is required."
    if field == "type" and kind == "string_type":
        return "the field [type] must be a string."
    if field == "args" and kind == "dict_type":
        return "the field [args] must be a JSON object."
    return f"the field [{field}] is invalid: {error['msg']}."
