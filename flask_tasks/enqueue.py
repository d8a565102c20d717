"""Enqueueing: a task request checked (type, arguments, limits, notify_url, peer) and stored, with idempotency.

No Flask here: the task routes, the nask-task routes and any other caller use the same code.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import psycopg2
import psycopg2.extensions
from pydantic import TypeAdapter, ValidationError

from flask_tasks import db, outbound, shape
from flask_tasks.auth import AuthError, allows
from flask_tasks.config import Settings
from flask_tasks.group_commit import GroupCommit
from flask_tasks.models import ApiError, TaskRequestFields, request_error
from flask_tasks.registry import Registry, TaskArgsError, TaskType
from flask_tasks.sql import QUIET_INSERT
from flask_tasks.stopping import one_line


class NewTask(NamedTuple):  # a tuple: a bulk request makes one a task, and a frozen dataclass costs 4 times as much
    fields: dict[str, Any]  # its columns as insert_tasks takes them (task_fields), but for the id and subject
    legacy: bool  # the first flask-tasks' body: the arguments alone


_TASK_REQUEST = TypeAdapter(TaskRequestFields)
_TASK_REQUESTS = TypeAdapter(list[TaskRequestFields])


def parse_new_task(
    body: Any, registry: Registry, settings: Settings, claims: dict[str, Any] | None, body_bytes: int | None = None
) -> NewTask:
    """A checked task request, or ApiError (AuthError for a protected type) saying what is wrong with it.

    body_bytes: the size of the request body it came in, if known (it may spare measuring the args).
    """
    if not isinstance(body, dict):
        raise ApiError(400, 'the request body must be a JSON object, e.g. {"type": "add", "args": {"x": 1, "y": 2}}')
    legacy = "type" not in body
    try:
        # The first flask-tasks had no type: the whole body is the default task's arguments.
        given = _TASK_REQUEST.validate_python({"type": settings.default_task_type, "args": body} if legacy else body)
    except ValidationError as err:
        raise ApiError(400, request_error(err.errors()[0])) from None
    name, args = given["type"], given.get("args", {})
    if given.get("run_at") is not None and given.get("delay") is not None:
        raise ApiError(400, "give run_at or delay, not both.")
    task_type = registry.get(name)
    if task_type is not None and task_type.protected:  # here, or sent to a peer under this server's name
        if claims is None:
            raise AuthError(401, f"task type [{name}] is protected: send Authorization: Bearer <token>")
        if not allows(claims, name):
            raise AuthError(403, f"the token does not allow task type [{name}]")
    peer = given.get("peer")
    if peer is not None:
        if peer not in settings.peers:
            raise ApiError(400, f"peer [{peer}] is not known here (PEERS)")
        check_args_limits(args, settings, body_bytes)
        task_type = None  # the peer checks the type and its arguments
    else:
        if task_type is None:
            raise ApiError(400, f"task type [{name}] doesnt exist")
        check_args_limits(args, settings, body_bytes)
        try:
            args = task_type.validate(args)
        except TaskArgsError as err:
            raise ApiError(400, str(err)) from None
    if given.get("notify_url") is not None:  # last: it resolves the host, the one check that waits on the network
        check_notify_url(given["notify_url"], settings)
    return NewTask(task_fields(given, task_type, args, settings), legacy)


def parse_new_tasks(
    body: Any, registry: Registry, settings: Settings, claims: dict[str, Any] | None, body_bytes: int | None = None
) -> list[NewTask]:
    """The checked tasks of a body: one task request, or a JSON array of them (whose errors name the item)."""
    if not isinstance(body, list):
        return [parse_new_task(body, registry, settings, claims, body_bytes)]
    if not body:
        raise ApiError(400, "the array of tasks is empty.")
    if len(body) > settings.max_bulk_tasks:
        raise ApiError(400, f"at most {settings.max_bulk_tasks} tasks in one request (MAX_BULK_TASKS).")
    news = parse_plain_tasks(body, registry, settings, claims, body_bytes)
    if news is not None:
        return news
    news = []  # one at a time: the first task that is refused is named, with its problem
    for index, item in enumerate(body):
        try:
            news.append(parse_new_task(item, registry, settings, claims, body_bytes))
        except (ApiError, AuthError) as err:
            err.message = f"task [{index}]: {err.message}"
            raise
    return news


def parse_plain_tasks(
    items: list[Any], registry: Registry, settings: Settings, claims: dict[str, Any] | None, body_bytes: int | None
) -> list[NewTask] | None:
    """The checked tasks of an array, validated together (a few calls into pydantic rather than two a task);
    None unless every task is a plain one that passes (a type of this server, no notify_url or peer):
    parse_new_task then takes them one at a time and names the first problem.

    Each check is made once for the array or once for each task type where it can be: what is left
    to do for each task is most of a bulk request's cost (docs/BENCHMARKS.md)."""
    if not all(isinstance(item, dict) and "type" in item for item in items):
        return None  # a legacy body (the arguments alone) among them
    try:
        requests = _TASK_REQUESTS.validate_python(items)
    except ValidationError:
        return None
    indexes_by_type: dict[str, list[int]] = {}
    for index, given in enumerate(requests):
        if "peer" in given or "notify_url" in given or ("run_at" in given and "delay" in given):
            return None  # even as null: parse_new_task tells
        indexes_by_type.setdefault(given["type"], []).append(index)
    news: list[NewTask] = [None] * len(requests)  # type: ignore[list-item]
    for name, indexes in indexes_by_type.items():
        task_type = registry.get(name)
        if task_type is None or (task_type.protected and (claims is None or not allows(claims, name))):
            return None
        many = [requests[index].get("args", {}) for index in indexes]
        try:
            for args in many:
                check_args_limits(args, settings, body_bytes)
        except ApiError:
            return None
        validated = task_type.validate_many(many)
        if validated is None:
            return None
        for index, args in zip(indexes, validated, strict=True):
            news[index] = NewTask(task_fields(requests[index], task_type, args, settings), False)
    return news


def check_notify_url(url: str, settings: Settings) -> None:
    """ApiError(400) for a notify_url this server will not call, or when it has no secret to sign with."""
    if settings.webhook_secret is None:
        raise ApiError(
            400,
            "the field [notify_url] needs a webhook secret on the server: set WEBHOOK_SECRET "
            "(make one with `flask --app app webhook-secret`)",
        )
    try:
        outbound.check_url(url, allow_private=settings.notify_allow_private)
    except outbound.UnsafeUrlError as err:
        raise ApiError(400, f"the field [notify_url] is refused: {err}") from None


def check_args_limits(args: dict[str, Any], settings: Settings, body_bytes: int | None = None) -> None:
    """ApiError(400) for arguments nested deeper than ARGS_MAX_DEPTH or larger than ARGS_MAX_BYTES."""
    if not args:  # {}: one level, two bytes
        return
    depth, level = 0, [args]
    while level:
        depth += 1
        if depth > settings.args_max_depth:
            raise ApiError(400, f"the field [args] is nested too deeply: at most {settings.args_max_depth} levels")
        level = [
            child
            for value in level
            for child in (value.values() if isinstance(value, dict) else value)
            if isinstance(child, (dict, list))
        ]
    # A body this small cannot hold args over the limit, even encoded again (the longest growth is
    # a number: 1e15 comes back as 1000000000000000.0): spare encoding them only to measure them.
    if body_bytes is not None and body_bytes * 5 <= settings.args_max_bytes:
        return
    size = len(json.dumps(args, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    if size > settings.args_max_bytes:
        raise ApiError(400, f"the field [args] is {size} bytes of JSON: at most {settings.args_max_bytes}")


def task_fields(
    given: dict[str, Any], task_type: TaskType | None, args: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """A checked task's columns as insert_tasks takes them, but for the id and subject store_tasks adds.

    given: the fields of its task request (TaskRequestFields); task_type: None for a task a peer runs.
    Only the columns that have a value: insert_tasks reads a missing key as NULL (priority and delay
    as 0), and each key costs encoding and parsing for every task of a bulk request (a quarter of
    the insert's time for no-op tasks).
    """
    if None in given.values():  # a client may send null for an option: as if not given
        given = {name: value for name, value in given.items() if value is not None}
    fields = {**given, "args": args}
    if task_type is not None:
        fields.setdefault("max_attempts", task_type.max_attempts or settings.max_attempts)
        timeout = task_type.timeout or settings.task_timeout
        if timeout is not None:
            fields.setdefault("timeout", timeout)
    else:  # a peer task: its timeout is the peer's business (its task type's, its TASK_TIMEOUT) unless asked for
        fields.setdefault("max_attempts", settings.max_attempts)
        # Only what the client asked for: the peer's task type has its own defaults (a max_attempts of 1...).
        fields["peer_options"] = {
            name: given[name] for name in ("max_attempts", "timeout", "priority") if given.get(name)
        }
    return fields


def task_row(task_id: str, new: NewTask, subject: str | None) -> dict[str, Any]:
    """A new task as insert_tasks takes it."""
    return {"id": task_id, **new.fields} if subject is None else {"id": task_id, **new.fields, "subject": subject}


def legacy_form(task: dict[str, Any]) -> dict[str, Any]:
    """A task as the first flask-tasks showed it: its arguments repeated at the top level."""
    return {**{k: v for k, v in task["args"].items() if k not in task}, **task}


def store_tasks(
    connection: Callable[[], psycopg2.extensions.connection],
    news: list[NewTask],
    settings: Settings,
    subject: str | None,
    full: bool = True,
    group: GroupCommit | None = None,
) -> list[tuple[dict[str, Any], bool]]:
    """Store checked tasks, all or nothing; (task as the API shows it, True if created now) for each.

    A task whose idempotency key was used before by the same subject is not stored again:
    the task the first request made stands in (ApiError 409 if it is another task).
    connection() gives the connection, asked for only when needed: a single task without an
    idempotency key stored by `group` (with the other threads' in one commit, group_commit.py) needs none.
    full=False: each task is answered by its id alone (a client's `Prefer: return=minimal`).
    """
    rows = [task_row(task_id, new, subject) for task_id, new in zip(new_ids(len(news)), news, strict=True)]
    # A task with an idempotency key is stored alone: rows of one batch lock their keys in arrival
    # order, so two workers' batches holding the same keys in another order could deadlock, and one
    # key held by another transaction would hold up every task of the batch.
    if group is not None and len(rows) == 1 and "idempotency_key" not in rows[0]:
        with storing():
            times = group.insert(rows[0])
        stored = {} if times is None else {rows[0]["id"]: times}
        return _answers(connection, rows, news, stored, subject, full)
    conn = connection()
    params = {"tasks": json.dumps(rows), "max_task_time": settings.max_task_time}
    # One statement is all or nothing; a 409 below (an idempotency key used for another task) must
    # also undo the others, so with keys and more than one task it runs in a transaction.
    keys = any("idempotency_key" in row for row in rows)
    with storing(), conn if keys and len(rows) > 1 else contextlib.nullcontext():
        if keys or full:
            stored = {task_id: tuple(times) for task_id, *times in db.run(conn, "insert_tasks", params)}
        else:  # every task is stored (or the statement fails), and each is answered by the id made here
            db.run(conn, QUIET_INSERT, params)
            stored = dict.fromkeys([row["id"] for row in rows], ())
        return _answers(lambda: conn, rows, news, stored, subject, full)


def _answers(
    connection: Callable[[], psycopg2.extensions.connection],
    rows: list[dict[str, Any]],
    news: list[NewTask],
    stored: dict[str, tuple],
    subject: str | None,
    full: bool,
) -> list[tuple[dict[str, Any], bool]]:
    """store_tasks' answer for each row: the task stored now (`stored` has its times), or the one an
    earlier request made with its idempotency key."""
    if not full and len(stored) == len(rows):  # all stored now: their ids (a bulk request's common case)
        return [({"id": row["id"]}, True) for row in rows]
    answers = []
    for row, new in zip(rows, news, strict=True):
        times = stored.get(row["id"])
        if times is not None:
            answers.append((shape.new_task(row["id"], row, times) if full else {"id": row["id"]}, True))
        else:
            task = existing_task(connection(), new, subject)
            answers.append((task if full else {"id": task["id"]}, False))
    return answers


def existing_task(conn: psycopg2.extensions.connection, new: NewTask, subject: str | None) -> dict[str, Any]:
    """The task an earlier request made with this one's idempotency key; 409 if it is another task."""
    key, fields = new.fields.get("idempotency_key"), new.fields
    rows = db.run_dicts(conn, "get_task_by_idempotency_key", {"idempotency_key": key, "subject": subject})
    if not rows:  # it expired and was deleted just now
        raise ApiError(409, "an idempotency key was in use a moment ago; send the request again")
    if rows[0]["type"] != fields["type"] or rows[0]["args"] != fields["args"]:
        raise ApiError(409, f"the idempotency key [{key}] was used for a different task")
    return rows[0]


def new_ids(count: int) -> list[str]:
    """Time-ordered (version 7, RFC 9562) UUIDs as text: the time in ms, then 74 random bits.

    Time-ordered rather than random: a task's row gets a new entry in the primary key at each
    update (claimed, finished), and tasks stored together are claimed together. With random
    ids those entries land on as many index pages as tasks; with these on a few, and new tasks
    go to the right edge of the index (docs/BENCHMARKS.md). 74 random bits keep ids unguessable.
    The database's default for a row inserted without an id, flask_tasks_new_id(), makes the same kind.
    """
    millis = f"{time.time_ns() // 1_000_000:012x}"
    prefix = f"{millis[:8]}-{millis[8:]}-7"
    digits = os.urandom(10 * count).hex()  # 20 an id: 3 after the version, then 16 (the variant's and 15 more)
    return [
        f"{prefix}{digits[at : at + 3]}-{_VARIANT[digits[at + 3]]}{digits[at + 4 : at + 7]}-{digits[at + 7 : at + 19]}"
        for at in range(0, 20 * count, 20)
    ]


# A random hex digit with its first two bits set to 10, the RFC's variant.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


@contextlib.contextmanager
def storing() -> Iterator[None]:
    """Turn values PostgreSQL will not store into a 400."""
    try:
        yield
    except (psycopg2.DataError, UnicodeEncodeError, ValueError) as err:  # "\u0000", a lone surrogate, a NUL
        reason = db.error_text(err) if isinstance(err, psycopg2.Error) else one_line(err)
        raise ApiError(400, f"the request holds a value that cannot be stored: {reason}") from None
