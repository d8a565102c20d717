"""What an operator (or a task's owner) does to tasks: retry one, cancel or retry every task matching
the listing's filters, purge finished ones. Called by the routes and by the CLI alike.

A retried task starts over: its attempts are reset to 0, so it gets its full max_attempts again
(extending them would leave a task that failed all its attempts with none). Its last_error stays,
to show why it had failed, until an attempt fails anew.

Bulk actions work through each status and type in batches of BATCH rows, newest first along
tasks_list_idx (tasks_running_idx for running tasks), each batch a transaction of its own:
pick_batch locks the batch's rows (the one statement that knows the filters), then the action's own
statement acts on those ids, the same statement one task's route runs (cancel_task, retry_task), so
the two cannot drift apart. No lock is held long and a handler is never kept waiting: a row a
handler holds at that moment is skipped and taken by a later batch. They act on the tasks created
until the action began, so tasks arriving meanwhile cannot keep one going forever.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg2.extensions

from flask_tasks import db, shape
from flask_tasks.listing import Filters
from flask_tasks.models import ApiError
from flask_tasks.stats import DURATION_BUCKETS

log = logging.getLogger("flask_tasks.actions")

BATCH = 1000  # rows per statement of a bulk action
LOCKED_WAIT = 10.0  # seconds a bulk action waits for rows held by others before it leaves them
RETRYABLE: tuple[str, ...] = (shape.FAILED, shape.CANCELLED)


def _no_buckets() -> list[int]:
    # A task_stats row has a count per duration bucket (and one for +Inf); a retry adds to none.
    return [0] * (len(DURATION_BUCKETS) + 1)


def retry_task(
    conn: psycopg2.extensions.connection,
    task_id: str,
    subject: str | None = None,
    operator: bool = False,
    keep: float = 3600.0,
) -> dict[str, Any]:
    """Run a failed or cancelled task again (see the module's text); the task as GET shows it.

    Who may: an operator, the token subject that posted it, or anyone for a task posted without
    a token (as for a cancel). ApiError 404 for a task the asker may not see, 409 for one that
    cannot be retried. `keep`: seconds the task is kept from now (MAX_TASK_TIME).
    """
    key = _task_key(task_id)
    asker = {"subject": subject, "operator": operator}
    retried = db.run(conn, "retry_task", {**asker, "ids": [key], "keep": keep, "buckets": _no_buckets()})
    task = _visible_task(conn, task_id, key, asker, keep)
    if retried:
        return task
    if task["peer"] is not None and task["status"] in RETRYABLE:
        raise ApiError(
            409,
            f"task [{task_id}] ran on the peer server [{task['peer']['name']}], which decides its attempts: "
            "post it again instead",
        )
    raise ApiError(409, f"task [{task_id}] is {task['status']}: only a failed or cancelled task can be retried")


def cancel_task(
    conn: psycopg2.extensions.connection,
    task_id: str,
    subject: str | None = None,
    operator: bool = False,
    keep: float = 3600.0,
) -> dict[str, Any]:
    """Cancel a waiting task at once, or ask a running one to stop; the task as GET shows it afterwards.

    Who may: as for a retry. ApiError 404 for a task the asker may not see, 409 for one that has finished.
    """
    key = _task_key(task_id)
    asker = {"subject": subject, "operator": operator}
    cancelled = db.run(conn, "cancel_task", {**asker, "ids": [key], "keep": keep})
    task = _visible_task(conn, task_id, key, asker, keep)
    if not cancelled:
        raise ApiError(409, f"task [{task_id}] has already finished: it is {task['status']}")
    return task


def _task_key(task_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(task_id)
    except ValueError:
        raise ApiError(404, f"task [{task_id}] not found: task ids are UUIDs") from None


def _visible_task(
    conn: psycopg2.extensions.connection, task_id: str, key: uuid.UUID, asker: dict[str, Any], keep: float
) -> dict[str, Any]:
    """The task as GET shows it, if the asker may see it; else ApiError 404."""
    found = db.run_dicts(conn, "get_task", {**asker, "id": key})
    if not found:
        raise ApiError(404, f"task [{task_id}] not found: it may have expired (tasks are kept {keep:g} s)")
    return found[0]


def by_status_index(statuses: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The statuses grouped by the index their tasks are read from, each with the suffix of its statements'
    form: running tasks are in tasks_running_idx ("_running"), the others in tasks_list_idx ("")."""
    others = [status for status in statuses if status != shape.RUNNING]
    return ([("", others)] if others else []) + ([("_running", [shape.RUNNING])] if shape.RUNNING in statuses else [])


def _branches(
    conn: psycopg2.extensions.connection, filters: Filters, actionable: tuple[str, ...]
) -> list[tuple[str, str]]:
    """The (status, type) pairs a bulk action walks: the statuses it acts on, and the types asked for or present."""
    statuses = [status for status in filters.statuses() if status in actionable]
    if not statuses:
        return []
    if filters.type:
        return [(status, task_type) for status in statuses for task_type in filters.type]
    return [
        (status, task_type)
        for suffix, grouped in by_status_index(statuses)
        for status, task_type in db.run(conn, "task_types_of_statuses" + suffix, {"statuses": grouped})
    ]


def _in_batches(
    conn: psycopg2.extensions.connection,
    action: str,
    filters: Filters,
    actionable: tuple[str, ...],
    act: Callable[[list[uuid.UUID]], int],
) -> int:
    """Pick batches of the tasks `action` takes (pick_batch) through each status and type, and `act` on each
    batch's ids in the transaction that locked them, until no matching row is left there; how many it acted on.

    Within a status and type, each batch goes on from where the last one ended (newest first, in
    the listing's index), so no batch reads again the entries that earlier ones changed; a batch that
    passed a row someone else held goes on from the same place, to take it once it is free.
    """
    params: dict[str, Any] = {**filters.params(), "action": action, "batch": BATCH, "started": None}
    total = 0
    for status, task_type in _branches(conn, filters, actionable):
        params.update(status=status, type=task_type, after_created=None, after_id=None)
        ((suffix, _),) = by_status_index([status])
        pick = "pick_batch" + suffix
        stuck_since: float | None = None
        while True:
            with conn:  # one transaction: the picked rows stay locked until they are acted on
                ids, left, passed_one, last_created, last_id, started = db.run(conn, pick, params)[0]
                if ids:
                    total += act(ids)
            params["started"] = started  # every batch takes the tasks created until the first began
            if not left:
                break
            if ids:
                stuck_since = None
                if not passed_one:
                    params.update(after_created=last_created, after_id=last_id)
                continue
            # Only rows another transaction holds are left (a handler's claim or heartbeat, for a moment).
            now = time.monotonic()
            stuck_since = stuck_since or now
            if now - stuck_since > LOCKED_WAIT:
                log.warning("%s: left tasks (%s, %s) still locked after %.0f s", action, status, task_type, LOCKED_WAIT)
                break
            time.sleep(0.02)
    return total


def cancel_matching(conn: psycopg2.extensions.connection, filters: Filters, keep: float) -> int:
    """Cancel every waiting or running task matching the filters (running ones are asked to stop); how many."""
    params = {"keep": keep, "operator": True, "subject": None}
    return _in_batches(
        conn, "cancel", filters, shape.ACTIVE, lambda ids: len(db.run(conn, "cancel_task", {**params, "ids": ids}))
    )


def retry_matching(conn: psycopg2.extensions.connection, filters: Filters, keep: float) -> int:
    """Retry every failed or cancelled task matching the filters, except those a peer ran; how many."""
    params = {"keep": keep, "operator": True, "subject": None, "buckets": _no_buckets()}
    return _in_batches(
        conn, "retry", filters, RETRYABLE, lambda ids: len(db.run(conn, "retry_task", {**params, "ids": ids}))
    )


def purge(conn: psycopg2.extensions.connection, filters: Filters) -> int:
    """Delete the finished tasks matching the filters (not those whose notify_url delivery is pending); how many.

    ApiError(400) if the filters ask for waiting or running tasks: those are cancelled, not deleted.
    """
    active = [status for status in filters.status if status in shape.ACTIVE]
    if active:
        raise ApiError(
            400, f"purge deletes only finished tasks ({', '.join(shape.FINAL)}), not {', '.join(active)} ones"
        )
    return _in_batches(
        conn, "purge", filters, shape.FINAL, lambda ids: db.run(conn, "delete_tasks", {"ids": ids})[0][0]
    )
