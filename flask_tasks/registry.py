"""The task registry: names task functions and validates their arguments."""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model


class DuplicateTaskError(ValueError):
    """Two task functions claim the same name."""


class TaskArgsError(ValueError):
    """Arguments that do not fit a task's signature; the message is for the client."""


def type_name(annotation: Any) -> str:
    """A short, readable name for an annotation: int, list[float], Optional[float]."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


@dataclass(frozen=True)
class TaskType:
    name: str
    func: Callable[..., Any]
    model: type[BaseModel]
    description: str
    max_attempts: int | None = None  # None: MAX_ATTEMPTS
    timeout: float | None = None  # seconds per attempt; None: TASK_TIMEOUT
    retry_backoff: float | None = None  # seconds before the first retry; None: RETRY_BACKOFF
    isolated: bool = False  # run each attempt in a child process
    memory_limit_mb: int | None = None  # address-space limit of that child
    protected: bool = False  # posting it needs a JWT that allows it

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        """The arguments with defaults filled in, or TaskArgsError with the first problem."""
        try:
            return self.model.model_validate(args).model_dump()
        except ValidationError as err:
            raise TaskArgsError(self._message(err.errors()[0])) from None

    def _message(self, error: Any) -> str:
        param = error["loc"][0] if error["loc"] else "?"
        kind = error["type"]
        if kind == "missing":
            return f"the required param [{param}] was not passed."
        if kind == "extra_forbidden":
            return f"the passed param [{param}] is not required."
        field = self.model.model_fields.get(str(param))
        if kind.endswith("_type") or kind.endswith("_parsing") or field is None:
            wanted = type_name(field.annotation) if field is not None else "?"
            return f"the passed param [{param}] doesnt match the required type: [{wanted}]."
        return f"the passed param [{param}] is invalid: {error['msg']}."

    def describe(self) -> dict[str, Any]:
        args = {}
        for name, field in self.model.model_fields.items():
            entry: dict[str, Any] = {"type": type_name(field.annotation), "required": field.is_required()}
            if not field.is_required():
                entry["default"] = field.default
            args[name] = entry
        options = {"max_attempts": self.max_attempts, "timeout": self.timeout, "isolated": self.isolated}
        options["require_authorization"] = self.protected
        if self.isolated:
            options["memory_limit_mb"] = self.memory_limit_mb
        return {
            "description": self.description,
            "args": args,
            "json_schema": self.model.model_json_schema(),
            **options,
        }


def _args_model(func: Callable[..., Any]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    hints = typing.get_type_hints(func, include_extras=True)
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(f"task {func.__name__}: parameter {param.name} must be a plain named parameter")
        if param.name not in hints:
            raise TypeError(f"task {func.__name__}: parameter {param.name} needs a type annotation")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], default)
    # strict: 1.5 is not an int and "1" is not a number, as clients of the old API expect.
    config = ConfigDict(extra="forbid", strict=True)
    return create_model(f"{func.__name__}_args", __config__=config, **fields)


class Registry:
    """Task types by name; registering a name twice is an error."""

    def __init__(self) -> None:
        self._types: dict[str, TaskType] = {}

    def task(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry_backoff: float | None = None,
        isolated: bool = False,
        memory_limit_mb: int | None = None,
        protected: bool = False,
    ) -> Any:
        """Decorator: `@task` or `@task(name=..., max_attempts=..., timeout=..., isolated=..., protected=...)`.

        max_attempts: attempts before the task fails (exceptions, timeouts and lost handlers all count).
        timeout: seconds an attempt may run. retry_backoff: seconds before the first retry, doubling.
        isolated: run each attempt in a child process, killed at the timeout, limited to memory_limit_mb.
        protected: posting the task needs `Authorization: Bearer <JWT>` whose claims allow it.
        """
        if max_attempts is not None and not 1 <= max_attempts <= 1000:
            raise ValueError("max_attempts must be from 1 to 1000")
        if memory_limit_mb is not None and not isolated:
            raise ValueError("memory_limit_mb needs isolated=True")

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            task_name = name or f.__name__
            if task_name in self._types:
                raise DuplicateTaskError(f"task type [{task_name}] is already registered")
            doc = inspect.getdoc(f) or ""
            options = {"max_attempts": max_attempts, "timeout": timeout, "retry_backoff": retry_backoff}
            options |= {"isolated": isolated, "memory_limit_mb": memory_limit_mb, "protected": protected}
            self._types[task_name] = TaskType(task_name, f, _args_model(f), doc.split("\n\n")[0], **options)
            return f

        return register(func) if func is not None else register

    def get(self, name: str) -> TaskType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def protected_names(self) -> list[str]:
        return [name for name in self.names() if self._types[name].protected]

    def describe(self) -> dict[str, Any]:
        return {name: self._types[name].describe() for name in self.names()}


registry = Registry()
task = registry.task


def load_tasks(module_name: str) -> Registry:
    """Import the user's task module (which registers its tasks) and return the registry."""
    importlib.import_module(module_name)
    return registry
