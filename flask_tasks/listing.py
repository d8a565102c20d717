"""The task listing (GET /task, the CLI's `tasks list`): its filters, its pages and their cursors.

Newest first: by `created`, then `id`, both descending. A page ends with an opaque cursor, the
position (created, id) of its last task; the next page is what comes after that position, read
from the index (keyset pagination), never skipped over with OFFSET, so page 1,000 costs what page 1
costs and a task inserted meanwhile neither repeats nor hides one.

Every listing reads tasks_list_idx (status, type, created DESC, id DESC): one branch per status and
type, each the newest `limit` entries after the cursor, merged and cut to `limit`. The statuses are
known; without a type filter the types of each status are found in the same index by skipping from
one type to the next (a loose index scan), so a listing never reads the table at large. Running
tasks are in tasks_running_idx (type, created DESC, id DESC) instead, read the same way in the
statement's second arm. A listing of one subject's tasks reads tasks_subject_created_idx instead.
tests/test_listing.py checks the plans.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg2.extensions

from flask_tasks import db, shape
from flask_tasks.models import YEAR_9999, ApiError

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
FILTER_NAMES: tuple[str, ...] = ("status", "type", "since", "until", "peer", "subject")
PAGE_NAMES: tuple[str, ...] = ("limit", "cursor")
MAX_TYPES = 100  # type names in one filter: each is a branch of the listing per status
MAX_NAME = 200  # characters in a type, peer or subject name
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Columns the listing statements add to a task: where it stands in the order (for the cursor).
POSITION = "position"


@dataclass(frozen=True)
class Filters:
    """Which tasks a listing (or a bulk action) takes. An empty tuple or None: no condition."""

    status: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    since: dt.datetime | None = None  # created at or after
    until: dt.datetime | None = None  # created before
    peer: str | None = None  # sent to this peer server
    subject: str | None = None  # posted with a token of this subject

    def is_empty(self) -> bool:
        return self == Filters()

    def statuses(self) -> tuple[str, ...]:
        """The statuses asked for, in shape.STATUSES order (all of them without a status filter)."""
        return tuple(s for s in shape.STATUSES if not self.status or s in self.status)

    def params(self) -> dict[str, Any]:
        """The filters as the parameters of the listing and action statements."""
        return {
            "statuses": list(self.statuses()),
            "types": list(self.type) or None,
            "since": self.since,
            "until": self.until,
            "peer": self.peer,
            "subject": self.subject,
        }


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"the filter [{name}] must be a string")
    if "\x00" in value:
        raise ApiError(400, f"the filter [{name}] may not hold a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate from a JSON body: PostgreSQL cannot hold it
        raise ApiError(400, f"the filter [{name}] is not valid Unicode text") from None
    return value.strip()


def _names(name: str, value: Any) -> tuple[str, ...]:
    """A comma-separated list of names, each given once."""
    names = tuple(dict.fromkeys(part.strip() for part in _text(name, value).split(",")))
    if any(not part for part in names):
        raise ApiError(400, f"the filter [{name}] is a comma-separated list of names with none empty")
    if any(len(part) > MAX_NAME for part in names):
        raise ApiError(400, f"the filter [{name}] has a name longer than {MAX_NAME} characters")
    return names


def _one_name(name: str, value: Any) -> str:
    text = _text(name, value)
    if not text or len(text) > MAX_NAME:
        raise ApiError(400, f"the filter [{name}] must be a name of 1 to {MAX_NAME} characters")
    return text


def parse_time(name: str, value: Any) -> dt.datetime:
    """Unix seconds (`1714000000`, `1714000000.5`) or ISO 8601 (`2024-04-25T10:00:00Z`; UTC without an offset)."""
    text = _text(name, value)
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or not 0 <= seconds <= YEAR_9999:
            raise ApiError(400, f"the filter [{name}] is out of range: unix seconds from 0 to {YEAR_9999:.0f}")
        return EPOCH + dt.timedelta(microseconds=round(seconds * 1_000_000))
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            400, f"the filter [{name}] must be unix seconds or an ISO 8601 time (2024-04-25T10:00:00Z), not {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise ApiError(400, f"the filter [{name}] is out of range") from None


def parse_filters(params: Mapping[str, Any]) -> Filters:
    """The filters of a listing or bulk action; ApiError(400) naming a bad or unknown one.

    `limit` and `cursor` may be among `params` (they are a page's, read by parse_limit and list_tasks).
    """
    unknown = [name for name in params if name not in FILTER_NAMES + PAGE_NAMES]
    if unknown:
        raise ApiError(400, f"unknown filter [{unknown[0]}]; the filters are {', '.join(FILTER_NAMES)}")
    found: dict[str, Any] = {}
    if "status" in params:
        statuses = _names("status", params["status"])
        for status in statuses:
            if status not in shape.STATUSES:
                raise ApiError(
                    400, f"the filter [status] has an unknown status [{status}]; known: {', '.join(shape.STATUSES)}"
                )
        found["status"] = statuses
    if "type" in params:
        types = _names("type", params["type"])
        if len(types) > MAX_TYPES:
            raise ApiError(400, f"the filter [type] names more than {MAX_TYPES} types")
        found["type"] = types
    for name in ("since", "until"):
        if name in params:
            found[name] = parse_time(name, params[name])
    for name in ("peer", "subject"):
        if name in params:
            found[name] = _one_name(name, params[name])
    filters = Filters(**found)
    if filters.since is not None and filters.until is not None and filters.since > filters.until:
        raise ApiError(400, "the filter [since] is later than [until]")
    return filters


def parse_limit(value: Any) -> int:
    """A page's size: default 50, at most 500; ApiError(400) for anything but a whole number in range."""
    if value is None:
        return DEFAULT_LIMIT
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiError(400, f"the parameter [limit] must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return int(text)


def encode_cursor(created: dt.datetime, task_id: str) -> str:
    """The opaque position of a task in the listing: its created time (microseconds) and id, in base64."""
    micros = (created - EPOCH) // dt.timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}/{task_id}".encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """The position a cursor holds; ApiError(400) for one this server did not give."""
    bad = ApiError(400, "the parameter [cursor] is not one this server gave: pass the `next` of a page as it is")
    if not isinstance(cursor, str) or not cursor.isascii() or len(cursor) > 200:
        raise bad
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        micros, _, task_id = text.partition("/")
        if not micros.lstrip("-").isdigit():
            raise ValueError(micros)
        return EPOCH + dt.timedelta(microseconds=int(micros)), uuid.UUID(task_id)
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise bad from None


def list_tasks(
    conn: psycopg2.extensions.connection, filters: Filters, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of tasks as GET /task/<id> shows them, newest first, and the next page's cursor (None: no more)."""
    after_created, after_id = decode_cursor(cursor) if cursor is not None else (None, None)
    params = {**filters.params(), "after_created": after_created, "after_id": after_id, "limit": limit + 1}
    if filters.subject is not None:
        statement = "list_subject_tasks_page"
    elif filters.peer is not None:
        statement = "list_peer_tasks_page"
    else:
        statement = "list_tasks_page"
    rows = db.run_dicts(conn, statement, params)
    more = len(rows) > limit
    rows = rows[:limit]
    tasks = [{name: row[name] for name in shape.FIELD_NAMES} for row in rows]
    following = encode_cursor(rows[-1][POSITION], rows[-1]["id"]) if more else None
    return tasks, following
