"""`flask --app app tasks ...`: an operator's command line for the queue.

It talks to the database directly (no HTTP, no token: whoever can reach the database is an
operator) and goes through the same code as the API: enqueue.py to submit, listing.py to list,
actions.py to retry and purge, workers.py and stats.py to look at the processes and counts.
Every command prints a table a person can read, or with --json only JSON on stdout.

Exit status: 0 on success; 1 when the task failed or was cancelled (submit --wait) or the
action could not be done (an unknown id, a finished task); 2 for bad input; 3 when
submit --wait gave up waiting.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
import unicodedata
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import psycopg2
import psycopg2.extensions
from flask import current_app
from flask.cli import AppGroup

from flask_tasks import actions, db, enqueue, listing, shape, stats, workers
from flask_tasks.auth import AuthError
from flask_tasks.config import Settings
from flask_tasks.models import ApiError
from flask_tasks.registry import Registry, TaskType

tasks_cli = AppGroup("tasks", help="Operate the queue from the shell: submit, list, show, cancel, retry, purge.")

EXIT_FAILED = 1  # the task failed or was cancelled, or the action could not be done
EXIT_WAIT_TIMEOUT = 3  # submit --wait gave up waiting; the task goes on
CELL = 40  # longest cell of a table (args, results, errors), in characters

F = TypeVar("F", bound=Callable[..., Any])


# -- plumbing shared by the commands ----------------------------------------------------


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def _registry() -> Registry:
    return current_app.config["REGISTRY"]


@contextlib.contextmanager
def _connection() -> Iterator[psycopg2.extensions.connection]:
    """A connection of its own (as the clients CLI opens one), closed at the end of the command."""
    logging.getLogger("flask_tasks.db").setLevel(logging.WARNING)  # a command prints only its answer
    try:
        conn = db.open_connection(_settings(), "cli")
    except psycopg2.OperationalError as err:
        raise click.ClickException(f"cannot reach the database: {db.error_text(err)}") from None
    try:
        yield conn
    finally:
        conn.close()


def _clear_errors(command: F) -> F:
    """Errors as one clear line and an exit status, never a traceback.

    A 400 from the shared code (a bad filter, bad arguments) is bad input: exit 2 with the usage;
    a 404 or 409 (an unknown id, a finished task) is an action that cannot be done: exit 1.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ApiError, AuthError) as err:
            if err.status == 400:
                raise click.UsageError(err.message, click.get_current_context(silent=True)) from None
            raise click.ClickException(err.message) from None
        except psycopg2.Error as err:
            raise click.ClickException(f"the database answered: {db.error_text(err)}") from None

    return run  # type: ignore[return-value]


def _json_out(value: Any) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if not text.replace("\n", "").isprintable():  # JSON escapes C0 controls, not C1 or bidi ones: escape those too
        text = "".join(
            json.dumps(ch)[1:-1] if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text
        )
    click.echo(text)


def _task_id(text: str) -> str:
    """A task id as the database takes it; exit 2 for text that is not a UUID."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise click.BadParameter(f"[{text}] is not a task id: task ids are UUIDs", param_hint="ID") from None


def _find_task(conn: psycopg2.extensions.connection, task_id: str) -> dict[str, Any]:
    """The task whoever posted it, with `posted_by` (its token subject); exit 1 when there is none."""
    rows = db.run_dicts(conn, "cli_get_task", {"id": task_id})
    if not rows:
        keep = _settings().max_task_time
        raise click.ClickException(f"task [{task_id}] not found: it may have expired (tasks are kept {keep} s)")
    return rows[0]


def _public(task: dict[str, Any]) -> dict[str, Any]:
    """The task as the API shows it (without who posted it)."""
    return {name: task[name] for name in shape.FIELD_NAMES if name in task}


# -- how values look in a terminal ------------------------------------------------------


def duration(seconds: float) -> str:
    """A span of time in its two largest units: 42s, 3m05s, 2h10m, 4d03h."""
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 and seconds != whole else f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole // 60 % 60:02d}m"
    return f"{whole // 86400}d{whole // 3600 % 24:02d}h"


def age(unix: float | None, now: float | None = None) -> str:
    """How long ago (or how soon) a unix time is: "3s ago", "in 2m00s"; "-" for none."""
    if unix is None:
        return "-"
    delta = (time.time() if now is None else now) - unix
    if abs(delta) < 1:
        return "now"
    whole = int(abs(delta))  # an age to the second is precise enough
    return f"{duration(whole)} ago" if delta > 0 else f"in {duration(whole)}"


def iso(unix: float | None) -> str:
    if unix is None:
        return "-"
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def compact(value: Any) -> str:
    """A JSON value on one line."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def printable(text: str) -> str:
    """The text with its control characters (but newlines) escaped: a task's arguments, errors and
    progress come from clients and task code, and must not drive the operator's terminal (ANSI escapes)."""
    if text.isprintable():
        return text
    return "".join(
        (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf")
        else ch
        for ch in text
    )


def cut(text: str, width: int = CELL) -> str:
    """One line of at most `width` characters: long values end with '...'."""
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 3] + "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = ()) -> str:
    """Aligned columns (those named in `right` aligned right, for numbers) under upper-case headers."""
    cells = [[printable(str(cell)) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if header in right else cell.ljust(width)
            for cell, width, header in zip(row, widths, headers, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line([header.upper() for header in headers]), *(line(row) for row in cells)])


def outcome(task: dict[str, Any], now: float) -> str:
    """What became of a task, in a few words: its result, its error, its progress or when it runs."""
    status = task["status"]
    if status == shape.DONE:
        return compact(task["result"])
    if status in (shape.FAILED, shape.CANCELLED):
        return (task.get("error") or {}).get("message") or ""
    progress = task.get("progress")
    if status == shape.RUNNING:
        stopping = "stop asked; " if task.get("cancel_requested") else ""
        if progress:
            message = f" {progress['message']}" if progress.get("message") else ""
            return f"{stopping}{progress['fraction'] * 100:.0f}%{message}"
        return f"{stopping}on {task['worker']}" if task.get("worker") else stopping.rstrip("; ")
    if task["run_at"] > now:  # waiting: for its time, or for a retry after an error
        error = task.get("last_error")
        return f"runs {age(task['run_at'], now)}" + (f" (last: {error['message']})" if error else "")
    return ""


def task_rows(tasks: Sequence[dict[str, Any]]) -> str:
    now = time.time()
    rows = [
        (
            task["id"],
            cut(task["type"], 24),
            task["status"],
            f"{task['attempts']}/{task['max_attempts']}",
            age(task["created"], now),
            cut(compact(task["args"]), 30),
            cut(outcome(task, now)),
        )
        for task in tasks
    ]
    return table(("id", "type", "status", "tries", "created", "args", "outcome"), rows)


def task_details(task: dict[str, Any]) -> str:
    """Every field of a task, one a line; JSON values in full."""
    now = time.time()
    lines: list[tuple[str, str]] = [("id", task["id"]), ("type", task["type"])]
    status = task["status"]
    if task.get("cancel_requested") and status in shape.ACTIVE:
        status += " (cancel asked)"
    lines += [("status", status), ("posted by", task.get("posted_by") or "- (no token)")]
    lines.append(("args", json.dumps(task["args"], indent=2, ensure_ascii=False)))
    if task["status"] == shape.DONE:
        lines.append(("result", json.dumps(task["result"], indent=2, ensure_ascii=False)))
    error = task.get("error") or task.get("last_error")
    if error:
        label = "error" if task.get("error") else "last error"
        lines.append((label, error["message"] + (f"\n{error['traceback'].rstrip()}" if error.get("traceback") else "")))
    progress = task.get("progress")
    if progress:
        message = f" {progress['message']}" if progress.get("message") else ""
        lines.append(
            ("progress", f"{progress['fraction'] * 100:.0f}%{message} (updated {age(progress['updated'], now)})")
        )
    lines += [
        ("attempts", f"{task['attempts']} of {task['max_attempts']}"),
        ("priority", str(task["priority"])),
        ("timeout", "none" if task["timeout"] is None else f"{task['timeout']:g} s"),
        ("worker", task["worker"] or "-"),
    ]
    for name in ("created", "run_at", "started", "finished", "expire"):
        value = task[name]
        lines.append((name.replace("_", " "), "-" if value is None else f"{iso(value)} ({age(value, now)})"))
    if task["started"] is not None and task["finished"] is not None:
        lines.append(("ran for", duration(max(0, task["finished"] - task["started"]))))
    if task.get("idempotency_key") is not None:
        lines.append(("idempotency key", task["idempotency_key"]))
    if task.get("notify"):
        notify = task["notify"]
        lines.append(("notify", f"{notify['url']}: {notify['status']} after {notify['attempts']} attempt(s)"))
    if task.get("peer"):
        lines.append(("peer", f"{task['peer']['name']} (its id there: {task['peer']['task_id'] or '-'})"))
    width = max(len(label) for label, _ in lines) + 2
    return "\n".join(label.ljust(width) + printable(value).replace("\n", "\n" + " " * width) for label, value in lines)


# -- submit ------------------------------------------------------------------------------

_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),  # before int: a bool is an int to Python
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
    (type(None), "null"),
)


def _json_type(value: Any) -> str:
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def _accepted_types(schema: dict[str, Any]) -> set[str]:
    """The JSON types an argument's JSON Schema takes (empty: any)."""
    found: set[str] = set()
    for option in [schema, *schema.get("anyOf", [])]:
        kind = option.get("type")
        found.update([kind] if isinstance(kind, str) else kind or [])
    if "number" in found:
        found.add("integer")
    return found


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_value(text: str, accepted: Collection[str] = ()) -> Any:
    """A key=value's value: JSON when it parses as JSON (3, [1, 2], true, "x"), else the text itself.

    For an argument that takes a string but not what the text parses as (echo's
    required_arg=123), the text as typed: the string "123".
    """
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        return text
    if "string" in accepted and _json_type(value) not in accepted:
        return text
    return value


def parse_args(pairs: Sequence[str], task_type: TaskType | None, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The arguments of `key=value ...` (added to `base`, from --args); BadParameter for a malformed pair."""
    properties = task_type.model.model_json_schema().get("properties", {}) if task_type is not None else {}
    args = dict(base or {})
    given: set[str] = set()
    for pair in pairs:
        key, equals, text = pair.partition("=")
        if not equals or not key.strip():
            raise click.BadParameter(
                f"[{pair}] is not key=value (e.g. x=3, name=alice, items=[1,2])", param_hint="ARGS"
            )
        if key in given:
            raise click.BadParameter(f"the argument [{key}] is given twice", param_hint="ARGS")
        given.add(key)
        args[key] = parse_value(text, _accepted_types(properties.get(key, {})))
    return args


def _args_option(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as err:
        raise click.BadParameter(f"not JSON: {err}", param_hint="--args") from None
    if not isinstance(value, dict):
        raise click.BadParameter('must be a JSON object, e.g. {"x": 1}', param_hint="--args")
    return value


def _wait(conn: psycopg2.extensions.connection, task_id: str, timeout: float | None) -> dict[str, Any] | None:
    """The task once it is final; None if `timeout` seconds pass first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause, told = 0.05, 0
    while True:
        rows = db.run_dicts(conn, "get_task", {"id": task_id, "subject": None, "operator": True})
        if not rows:  # deleted meanwhile: only a purge or a very short MAX_TASK_TIME does that
            raise click.ClickException(f"task [{task_id}] was deleted while waiting for it")
        task = rows[0]
        if task["status"] in shape.FINAL:
            return task
        if task["status"] == shape.WAITING and task["last_error"] and task["attempts"] > told:
            told = task["attempts"]  # a person waiting wants to know why it takes long
            message = printable(task["last_error"]["message"])
            click.echo(f"attempt {told} failed: {message}; next attempt {age(task['run_at'])}", err=True)
        if deadline is not None and time.monotonic() + pause > deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)  # quick for quick tasks, one query a half second for long ones


def _warn_unserved(conn: psycopg2.extensions.connection, task_type: str) -> None:
    """Say so when no live handler runs this type: --wait would wait until one starts."""
    alive = [w for w in workers.list_workers(conn, _settings().lease_seconds) if w["kind"] == "handler" and w["alive"]]
    if not any(task_type in (w.get("task_types") or []) for w in alive):
        click.echo(f"note: no live handler runs [{task_type}] now: the task waits until one starts", err=True)


@tasks_cli.command("submit", short_help="Submit a task; --wait prints its result.")
@click.argument("task_type", metavar="TYPE")
@click.argument("pairs", metavar="[KEY=VALUE]...", nargs=-1)
@click.option("--args", "args_json", metavar="JSON", help="Arguments as a JSON object (KEY=VALUE pairs add to it).")
@click.option("--wait", is_flag=True, help="Wait until the task ends and print its result.")
@click.option(
    "--timeout", type=click.FloatRange(min=0), metavar="SECONDS", help="With --wait: give up after this many seconds."
)
@click.option("--priority", type=int, metavar="N", help="Higher runs first (-1000 to 1000).")
@click.option("--delay", type=float, metavar="SECONDS", help="Seconds from now before it runs.")
@click.option("--max-attempts", type=int, metavar="N", help="Attempts before it fails.")
@click.option("--task-timeout", type=float, metavar="SECONDS", help="Seconds an attempt may run.")
@click.option("--idempotency-key", help="A second submit with this key gives the first task back.")
@click.option("--peer", help="The peer server (PEERS) that runs it.")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON (with --wait: once it has ended).")
@_clear_errors
def submit(
    task_type: str,
    pairs: tuple[str, ...],
    args_json: str | None,
    wait: bool,
    timeout: float | None,
    priority: int | None,
    delay: float | None,
    max_attempts: int | None,
    task_timeout: float | None,
    idempotency_key: str | None,
    peer: str | None,
    as_json: bool,
) -> None:
    """Submit a task of type TYPE with arguments KEY=VALUE ... and print its id.

    A VALUE is JSON when it parses as JSON (n=3 is a number, l=[1,2] a list, b=true a boolean), else
    the text as typed (s=hello); an argument that takes a string gets the text as typed (s=123 is
    "123"). The task is checked and stored as POST /task does; a protected type needs no token here.

    With --wait, print the result once the task ends: exit status 0 when it is done, 1 when it failed
    or was cancelled, 3 when --timeout passed first (the task goes on).
    """
    settings, registry = _settings(), _registry()
    if registry.get(task_type) is None and peer is None:  # a peer knows its own types
        raise click.BadParameter(
            f"[{task_type}] is not a task type here; known: {', '.join(registry.names())}", param_hint="TYPE"
        )
    args = parse_args(pairs, registry.get(task_type), _args_option(args_json))
    options = {
        "priority": priority,
        "delay": delay,
        "max_attempts": max_attempts,
        "timeout": task_timeout,
        "idempotency_key": idempotency_key,
        "peer": peer,
    }
    body = {"type": task_type, "args": args, **{name: value for name, value in options.items() if value is not None}}
    # An operator may post any type: the claims of a token that allows this one.
    claims = {"allowed_tasks": {task_type: True}}
    new = enqueue.parse_new_task(body, registry, settings, claims)
    with _connection() as conn:
        ((task, _created),) = enqueue.store_tasks(lambda: conn, [new], settings, None)
        if not wait:
            _json_out(task) if as_json else click.echo(task["id"])
            return
        click.echo(f"task {task['id']} ({task_type}) submitted; waiting for it to end", err=True)
        if peer is None:
            _warn_unserved(conn, task_type)
        try:
            final = _wait(conn, task["id"], timeout)
        except KeyboardInterrupt:
            click.echo(f"\nstopped waiting; the task goes on: flask --app app tasks show {task['id']}", err=True)
            raise SystemExit(130) from None
    if final is None:
        click.echo(f"gave up waiting after {timeout:g} s; the task goes on: tasks show {task['id']}", err=True)
        if as_json:
            with _connection() as conn:
                _json_out(_public(_find_task(conn, task["id"])))
        raise SystemExit(EXIT_WAIT_TIMEOUT)
    if as_json:
        _json_out(final)
    elif final["status"] == shape.DONE:
        click.echo(json.dumps(final["result"], indent=2, ensure_ascii=False))
    if final["status"] == shape.DONE:
        click.echo(f"task {final['id']} done (attempt {final['attempts']} of {final['max_attempts']})", err=True)
        return
    message = printable((final.get("error") or {}).get("message") or "no reason given")
    click.echo(f"task {final['id']} {final['status']} after {final['attempts']} attempt(s): {message}", err=True)
    raise SystemExit(EXIT_FAILED)


# -- list, show ---------------------------------------------------------------------------


def filter_options(command: F) -> F:
    """The listing's filters, as options (GET /task takes the same)."""
    options = [
        click.option("--status", multiple=True, help="waiting, running, done, failed, cancelled (repeat, or a,b)."),
        click.option("--type", "types", multiple=True, metavar="TYPE", help="A task type (repeat, or a,b)."),
        click.option("--since", metavar="TIME", help="Created at or after TIME (ISO 8601 or unix seconds)."),
        click.option("--until", metavar="TIME", help="Created before TIME (ISO 8601 or unix seconds)."),
        click.option("--peer", help="Tasks sent to this peer server."),
        click.option("--subject", help="Tasks posted with tokens of this subject (a client name)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _filter_params(
    status: tuple[str, ...],
    types: tuple[str, ...],
    since: str | None,
    until: str | None,
    peer: str | None,
    subject: str | None,
) -> dict[str, str]:
    """The filters given, as GET /task takes them in its query."""
    params = {"status": ",".join(status), "type": ",".join(types), "since": since, "until": until}
    params |= {"peer": peer, "subject": subject}
    return {name: value for name, value in params.items() if value}


@tasks_cli.command("list", short_help="List tasks, newest first, with filters.")
@filter_options
@click.option("--limit", metavar="N", help="Tasks on a page (default 50, at most 500).")
@click.option("--cursor", help="The page after the one that printed this cursor.")
@click.option("--json", "as_json", is_flag=True, help='Print {"tasks": [...], "next": CURSOR or null} as JSON.')
@_clear_errors
def list_command(
    status: tuple[str, ...],
    types: tuple[str, ...],
    since: str | None,
    until: str | None,
    peer: str | None,
    subject: str | None,
    limit: str | None,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List tasks, newest first, with the listing's filters; a page at a time."""
    filters = listing.parse_filters(_filter_params(status, types, since, until, peer, subject))  # 400: exit 2
    size = listing.parse_limit(limit)
    with _connection() as conn:
        tasks, next_cursor = listing.list_tasks(conn, filters, size, cursor)
    if as_json:
        _json_out({"tasks": tasks, "next": next_cursor})
        return
    if not tasks:
        click.echo("no tasks match")
    else:
        click.echo(task_rows(tasks))
    if next_cursor:
        click.echo(f"more: add --cursor {next_cursor}")


@tasks_cli.command("show", short_help="Show one task in full.")
@click.argument("task_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the task as GET /task/<id> shows it.")
@_clear_errors
def show(task_id: str, as_json: bool) -> None:
    """Show one task: its arguments, result or error (with the traceback), times and attempts."""
    key = _task_id(task_id)
    with _connection() as conn:
        task = _find_task(conn, key)
    _json_out(_public(task)) if as_json else click.echo(task_details(task))


# -- cancel, retry, purge -----------------------------------------------------------------


@tasks_cli.command("cancel", short_help="Cancel a task, or ask a running one to stop.")
@click.argument("task_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@_clear_errors
def cancel(task_id: str, as_json: bool) -> None:
    """Cancel a waiting task at once, or ask a running one to stop (whoever posted it)."""
    key = _task_id(task_id)
    with _connection() as conn:
        cancelled = actions.cancel_task(conn, key, operator=True, keep=_settings().max_task_time)
    if as_json:
        _json_out(cancelled)
    elif cancelled["status"] == shape.CANCELLED:
        click.echo(f"cancelled {key}")
    else:
        click.echo(f"asked {key} to stop: it is {cancelled['status']} (tasks show {key} to follow it)")


@tasks_cli.command("retry", short_help="Run a failed or cancelled task again.")
@click.argument("task_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@_clear_errors
def retry(task_id: str, as_json: bool) -> None:
    """Run a failed or cancelled task again (as POST /task/<id>/retry does)."""
    key = _task_id(task_id)
    with _connection() as conn:
        task = actions.retry_task(conn, key, operator=True, keep=_settings().max_task_time)
    if as_json:
        _json_out(task)
    else:
        attempt = f"attempt {task['attempts'] + 1} of {task['max_attempts']}"
        click.echo(f"retried {key}: it is {task['status']}, for {attempt}")


@tasks_cli.command("purge", short_help="Delete the finished tasks matching filters.")
@filter_options
@click.option("--all", "everything", is_flag=True, help="With no filter: every finished task.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help='Print {"deleted": n} as JSON.')
@_clear_errors
def purge(
    status: tuple[str, ...],
    types: tuple[str, ...],
    since: str | None,
    until: str | None,
    peer: str | None,
    subject: str | None,
    everything: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete the finished tasks (done, failed, cancelled) that match the filters.

    Waiting and running tasks are never deleted. With no filter, --all is needed.
    """
    params = _filter_params(status, types, since, until, peer, subject)
    if not params and not everything:
        raise click.UsageError("give a filter (--status, --type, --since...) or --all to purge every finished task")
    filters = listing.parse_filters(params)
    active = [name for name in filters.status if name in shape.ACTIVE]
    if active:
        raise click.UsageError(f"purge deletes only finished tasks: --status {','.join(active)} cannot be purged")
    described = " ".join(f"{name}={value}" for name, value in params.items())
    if not yes:
        what = f"the finished tasks matching {described}" if described else "EVERY finished task"
        click.confirm(f"Delete {what}?", abort=True, err=True)
    with _connection() as conn:
        deleted = actions.purge(conn, filters)
    _json_out({"deleted": deleted}) if as_json else click.echo(f"deleted {deleted} task(s)")


# -- workers, stats -------------------------------------------------------------------------


def _state(worker: dict[str, Any]) -> str:
    if worker["alive"]:
        return "alive"
    return "stopped" if worker.get("stopped") is not None else "gone (no heartbeat)"


def _current(worker: dict[str, Any], now: float) -> str:
    current = worker.get("current") or []
    return ", ".join(f"{task['type']} ({age(task['started'], now).removesuffix(' ago')})" for task in current) or "-"


@tasks_cli.command("workers", short_help="The handlers and janitors at work.")
@click.option("--gone", is_flag=True, help="Also the processes that stopped in the last hour.")
@click.option("--json", "as_json", is_flag=True, help='Print {"workers": [...]} as GET /workers does.')
@_clear_errors
def workers_command(gone: bool, as_json: bool) -> None:
    """List the handlers and janitors: host, pid, heartbeat, tasks done and failed, current tasks."""
    with _connection() as conn:
        found = workers.list_workers(conn, _settings().lease_seconds, gone=gone)
    if as_json:
        _json_out({"workers": found})  # as GET /workers answers
        return
    if not found:
        click.echo("no handler or janitor is running" + ("" if gone else " (--gone: those that stopped)"))
        return
    now = time.time()
    rows = [
        (
            cut(worker["name"], 30),
            worker["kind"],
            cut(f"{worker['host']}:{worker['pid']}", 30),
            _state(worker),
            age(worker["started"], now),
            age(worker["heartbeat"], now),
            worker["tasks_done"],
            worker["tasks_failed"],
            cut(_current(worker, now)),
        )
        for worker in found
    ]
    headers = ("name", "kind", "host:pid", "state", "started", "heartbeat", "done", "failed", "running")
    click.echo(table(headers, rows, right=("done", "failed")))


@tasks_cli.command("stats", short_help="Counts by status and type, throughput, handlers.")
@click.option("--fresh", is_flag=True, help="Count the tasks now (not a count up to STATS_INTERVAL old).")
@click.option("--json", "as_json", is_flag=True, help="Print what GET /stats answers, as JSON.")
@_clear_errors
def stats_command(fresh: bool, as_json: bool) -> None:
    """Tasks by status and type, the oldest waiting task, throughput and the live handlers.

    The counts are as the janitor last made them, at most STATS_INTERVAL old (counted here when older);
    --fresh counts now, which reads the whole table on a big one.
    """
    settings = _settings()
    with _connection() as conn:
        stats.refresh_counts(conn, 0 if fresh else settings.stats_interval)
        overview = stats.overview(conn, settings, _registry())
    if as_json:
        _json_out(overview)
        return
    click.echo(stats_text(overview))


def stats_text(overview: dict[str, Any]) -> str:
    now = time.time()
    headers = ("type", *shape.STATUSES)
    rows = [(cut(name, 30), *(counts.get(s, 0) for s in shape.STATUSES)) for name, counts in overview["types"].items()]
    rows.append(("(all)", *(overview["statuses"].get(s, 0) for s in shape.STATUSES)))
    lines = [f"tasks (counted {age(overview['taken'], now)})", table(headers, rows, right=shape.STATUSES), ""]
    oldest = overview["oldest_waiting_seconds"]
    lines.append(f"oldest waiting task: {'none waiting' if oldest is None else duration(oldest)}")
    minutes = overview.get("throughput") or []
    for span in (5, 60):
        last = minutes[-span:]
        done, failed = sum(m["done"] for m in last), sum(m["failed"] for m in last)
        lines.append(f"last {span} minutes: {done} done, {failed} failed")
    alive = overview.get("workers") or []
    handlers = sum(1 for w in alive if w["kind"] == "handler")
    lines.append(f"alive: {handlers} handler(s), {len(alive) - handlers} janitor(s)")
    unserved = overview.get("unserved_types") or []
    lines.append(f"types no live handler runs: {', '.join(unserved) if unserved else 'none'}")
    return "\n".join(lines)
