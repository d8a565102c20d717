"""The task registry: names task functions and validates their arguments."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

# Installed distributions add task types by declaring an entry point in this group:
# its value is a module whose @task functions register when it is imported.
ENTRY_POINT_GROUP = "flask_tasks.taskpacks"


class DuplicateTaskError(ValueError):
    """Two task functions claim the same name; the message names where each was defined."""


class TaskLoadError(Exception):
    """A task module or taskpack could not be imported; the message names it and the cause."""


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
class Source:
    """Where a task type was defined: the function's module, and the taskpack that installed it, if any."""

    module: str
    pack: str | None = None  # the distribution's name
    version: str | None = None  # the distribution's version

    def __str__(self) -> str:
        if self.pack is None:
            return f"module {self.module}"
        return f"pack {self.pack} {self.version} ({self.module})"

    def describe(self) -> dict[str, str]:
        if self.pack is None:
            return {"module": self.module}
        return {"pack": self.pack, "version": self.version or "", "module": self.module}


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
    cron: str | None = None  # enqueued at each tick of this cron expression (flask_tasks.periodic)
    source: Source | None = None  # set by the registry

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        """The arguments with defaults filled in, or TaskArgsError with the first problem."""
        try:
            return self.model.model_validate(args).model_dump()
        except ValidationError as err:
            raise TaskArgsError(self._message(err.errors()[0])) from None

    def validate_many(self, many: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """What validate gives for each, in two calls into pydantic for them all; None if any is refused
        (validate, one at a time, then names the first problem)."""
        try:
            return self._many.dump_python(self._many.validate_python(many))
        except ValidationError:
            return None

    @cached_property
    def _many(self) -> TypeAdapter[list[Any]]:
        return TypeAdapter(list[self.model])  # type: ignore[name-defined]

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
        options["cron"] = self.cron
        # "protected" is our word; "require_authorization" is the same, as flask-tasks v2 named it.
        options["protected"] = options["require_authorization"] = self.protected
        if self.isolated:
            options["memory_limit_mb"] = self.memory_limit_mb
        return {
            "description": self.description,
            "args": args,
            "json_schema": self.model.model_json_schema(),
            **options,
            "source": self.source.describe() if self.source is not None else None,
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
        self._pack: tuple[str, str] | None = None  # (name, version) of the taskpack being imported

    @contextlib.contextmanager
    def loading_pack(self, name: str, version: str) -> Iterator[None]:
        """Within this block, task types registered are recorded as coming from this taskpack."""
        previous, self._pack = self._pack, (name, version)
        try:
            yield
        finally:
            self._pack = previous

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
        cron: str | None = None,
    ) -> Any:
        """Decorator: `@task` or `@task(name=..., max_attempts=..., timeout=..., isolated=..., protected=..., cron=)`.

        max_attempts: attempts before the task fails (exceptions, timeouts and lost handlers all count).
        timeout: seconds an attempt may run. retry_backoff: seconds before the first retry, doubling.
        isolated: run each attempt in a child process, killed at the timeout, limited to memory_limit_mb.
        protected: posting the task needs `Authorization: Bearer <JWT>` whose claims allow it.
        cron: a janitor enqueues the task (with no arguments) at each tick of this cron expression, in UTC;
        an optional 6th field gives seconds. See flask_tasks.periodic.
        """
        if max_attempts is not None and not 1 <= max_attempts <= 1000:
            raise ValueError("max_attempts must be from 1 to 1000")
        if memory_limit_mb is not None and not isolated:
            raise ValueError("memory_limit_mb needs isolated=True")

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            task_name = name or f.__name__
            # The function's own module, not the one being loaded: a TASKS_MODULE may import
            # its tasks from other modules (tests.sidefx_tasks does `from tasks import *`).
            source = Source(getattr(f, "__module__", None) or "?", *(self._pack or (None, None)))
            if task_name in self._types:
                first = self._types[task_name].source
                where = f"in {source}" if first == source else f"by {first} and by {source}"
                raise DuplicateTaskError(f"task type [{task_name}] is defined twice: {where}")
            doc = inspect.getdoc(f) or ""
            options = {"max_attempts": max_attempts, "timeout": timeout, "retry_backoff": retry_backoff}
            options |= {"isolated": isolated, "memory_limit_mb": memory_limit_mb, "protected": protected}
            description = doc.split("\n\n")[0]
            model = _args_model(f)
            if cron is not None:
                # Imported here: periodic enqueues through enqueue.py, which imports this module.
                from flask_tasks.periodic import check_cron

                check_cron(cron, f"task {task_name}")
                required = [param for param, field in model.model_fields.items() if field.is_required()]
                if required:
                    raise TypeError(
                        f"task {task_name}: cron= enqueues it with no arguments, but it requires {', '.join(required)}"
                        " (give them defaults, or schedule it with arguments in SCHEDULE)"
                    )
            options["cron"] = cron
            self._types[task_name] = TaskType(task_name, f, model, description, **options, source=source)
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


def taskpacks() -> list[importlib.metadata.EntryPoint]:
    """The entry points of installed taskpacks, in a fixed order (by distribution, then entry point name).

    importlib.metadata lists a distribution found twice on sys.path only once (the first found).
    """
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted(found, key=lambda ep: (_pack_of(ep), ep.name))


def _pack_of(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    """(name, version) of the distribution that declares this entry point."""
    if ep.dist is None:  # not from an installed distribution: only EntryPoint(...) built by hand
        return ep.name, "?"
    return ep.dist.name or ep.name, ep.dist.version or "?"


def load_tasks(modules: str | Iterable[str], *, packs: bool = True) -> Registry:
    """Import the task modules (a name or comma-separated names), then every installed taskpack.

    Their @task decorators register into `registry`, which is returned. A module or pack that
    fails to import raises TaskLoadError naming it; a type defined twice raises DuplicateTaskError.
    A module already imported is not imported again, so calling this twice registers nothing new.
    """
    names = [m.strip() for m in modules.split(",")] if isinstance(modules, str) else list(modules)
    for name in filter(None, names):
        try:
            importlib.import_module(name)
        except DuplicateTaskError:
            raise  # its message already names both sources
        except Exception as err:
            raise TaskLoadError(f"cannot load TASKS_MODULE={name}: {err}") from err
    if packs:
        for ep in taskpacks():
            pack, version = _pack_of(ep)
            with registry.loading_pack(pack, version):
                try:
                    ep.load()
                except DuplicateTaskError:
                    raise
                except Exception as err:
                    raise TaskLoadError(f"cannot load taskpack {pack} {version} ({ep.value}): {err}") from err
    return registry
