"""Periodic tasks: a task enqueued at each tick of a cron expression, once per tick however many janitors run.

The entries come from `@task(cron=...)` (named by the task type, enqueued with no arguments) and from
SCHEDULE (named by its key: {"task", "cron", "args", and optionally "priority", "max_attempts",
"timeout"}), for tasks of taskpacks or with arguments. Cron expressions are read by croniter, in UTC:
five fields, or six with seconds last (`* * * * * */10`: every ten seconds), or an alias like `@daily`.

Each janitor calls `check_schedule` at start and `enqueue_due` every round. For each entry,
`enqueue_due` works out the latest tick at or before now and, in ONE transaction, moves the entry's
`periodic_ticks.last_tick` forward to it (`UPDATE ... WHERE last_tick < tick`) and enqueues the task
only if that update happened. Concurrent janitors wait on the row lock, then see the tick already
taken: exactly one task per tick, across restarts, however often or rarely enqueue_due is called.
The task's idempotency key `periodic:<name>:<tick>` is a second guard (were the row reset by hand).

- Only the newest due tick is enqueued: after a gap (everything down for an hour) an entry gets one
  task for its latest tick, not one per tick missed.
- A new entry (no row yet) records its latest past tick as done WITHOUT enqueueing it: cron never
  runs a job for a time before it was installed, and a daily report added at 15:00 should not run at
  once for the midnight that came before it. Its first task is at its next tick.
- The clock is the database's (`now()`), so janitors on hosts whose clocks differ agree on the ticks.
- A periodic task is an ordinary task: it goes through the API's own checks and statement
  (enqueue.parse_new_task / store_tasks), which fill in max_attempts, timeout and expire as for
  `POST /task`. It runs as soon as a handler takes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2.extensions
from croniter import CroniterBadDateError, CroniterError, croniter

from flask_tasks import db, enqueue
from flask_tasks.config import ConfigError, Settings
from flask_tasks.models import ApiError
from flask_tasks.registry import Registry

log = logging.getLogger("flask_tasks.periodic")

# The subject periodic tasks are stored under: no client's (client names have no ':'), so a client cannot take a
# tick's idempotency key (`periodic:<name>:<tick>`) first and stop its task; and only operators see them.
PERIODIC_SUBJECT = ":periodic"
SCHEDULE_OPTIONS = ("priority", "max_attempts", "timeout")  # the task options a SCHEDULE entry may set
SCHEDULE_FIELDS = ("task", "cron", "args", *SCHEDULE_OPTIONS)
ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")  # croniter's
MAX_NAME = 200  # characters: the idempotency key periodic:<name>:<tick> must stay within 255


@dataclass(frozen=True)
class Periodic:
    """One entry of the schedule: a task type enqueued with these arguments at each tick of `cron`."""

    name: str  # the key in periodic_ticks: the task type for @task(cron=...), the key of a SCHEDULE entry
    task: str  # the task type
    cron: str
    args: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # priority, max_attempts, timeout (SCHEDULE only)
    origin: str = "SCHEDULE"  # where it was declared, for messages: "SCHEDULE" or "@task(cron=...)"

    def latest_tick(self, now: datetime) -> datetime:
        return latest_tick(self.cron, now)

    def next_tick(self, now: datetime) -> datetime:
        return next_tick(self.cron, now)

    def body(self, tick: datetime) -> dict[str, Any]:
        """The task request this entry makes for a tick, as a client would POST it."""
        return {"type": self.task, "args": self.args, **self.options, "idempotency_key": tick_key(self.name, tick)}


# -- cron expressions and ticks (pure) ---------------------------------------------------------


def check_cron(expr: Any, where: str) -> None:
    """ConfigError (a ValueError) naming `where` unless croniter reads expr and it ever fires.

    Five fields, or six with seconds last; croniter also reads seven (a year), which we refuse:
    a schedule that stops in some year is better said by removing the entry.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(f"{where}: cron must be a cron expression such as */5 * * * *, not {expr!r}")
    fields = expr.split()
    if expr.strip().startswith("@") and expr.strip().lower() not in ALIASES:
        raise ConfigError(f"{where}: cron {expr!r} is not one of {', '.join(ALIASES)}")
    if not expr.strip().startswith("@") and len(fields) not in (5, 6):
        raise ConfigError(
            f"{where}: cron {expr!r} has {len(fields)} fields: give 5 (minute hour day month weekday), "
            "or 6 with seconds last"
        )
    try:
        croniter(expr, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:  # e.g. 0 0 30 2 *
        raise ConfigError(f"{where}: cron {expr!r} never comes (no such date)") from None
    except CroniterError as err:  # bad syntax, a value out of range
        raise ConfigError(f"{where}: cron {expr!r} is not valid: {err}") from None


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("a naive datetime: give the time zone (UTC)")
    return now.astimezone(UTC)


def latest_tick(cron: str, now: datetime) -> datetime:
    """The latest tick of cron at or before now (UTC). Ticks fall on whole seconds."""
    # croniter's get_prev is strictly before its start: start one second past now's whole second.
    start = _aware(now).replace(microsecond=0) + timedelta(seconds=1)
    return croniter(cron, start).get_prev(datetime)


def next_tick(cron: str, now: datetime) -> datetime:
    """The first tick of cron strictly after now (UTC)."""
    return croniter(cron, _aware(now)).get_next(datetime)


def due_tick(cron: str, last: datetime | None, now: datetime) -> tuple[datetime, bool] | None:
    """What to do for an entry whose last tick done is `last` (None: never seen), at `now`.

    None: nothing (its latest tick is done). Else (tick, enqueue): record `tick` as done, and
    enqueue its task if `enqueue` (False for a new entry: ticks before it was first seen are not run).
    Only the newest due tick is returned, however many came since `last`.
    """
    tick = latest_tick(cron, now)
    if last is None:
        return tick, False
    if last >= tick:
        return None
    return tick, True


def tick_key(name: str, tick: datetime) -> str:
    """The idempotency key of an entry's task for a tick: periodic:<name>:<tick in UTC, ISO 8601>."""
    return f"periodic:{name}:{tick.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


# -- the schedule ------------------------------------------------------------------------------


def check_schedule(settings: Settings, registry: Registry) -> list[Periodic]:
    """Every periodic entry: the task types with cron=, then SCHEDULE's; ConfigError for a bad one.

    Each entry's first request is checked as POST /task would check it (type, arguments, options),
    so a janitor with a schedule that cannot enqueue stops at start with one line saying why.
    """
    entries: dict[str, Periodic] = {}
    for name in registry.names():
        task_type = registry.get(name)
        if task_type is not None and task_type.cron is not None:
            entries[name] = Periodic(name, name, task_type.cron, origin="@task(cron=...)")
    for name, given in settings.schedule.items():
        where = f"SCHEDULE[{name}]"
        if name in entries:
            raise ConfigError(
                f"{where}: the name is taken by the task type {name} declared with @task(cron=...); "
                "give the SCHEDULE entry another name"
            )
        entries[name] = _schedule_entry(name, given, where)
    check_time = datetime.now(UTC)
    for entry in entries.values():
        where = f"{entry.origin} {entry.name}" if entry.origin != "SCHEDULE" else f"SCHEDULE[{entry.name}]"
        if not entry.name.strip() or len(entry.name) > MAX_NAME:
            raise ConfigError(f"{where}: a name must have 1 to {MAX_NAME} characters")
        check_cron(entry.cron, where)
        try:
            _new_task(entry, check_time, settings, registry)
        except ApiError as err:
            raise ConfigError(f"{where}: {err.message}") from None
    return list(entries.values())


def _schedule_entry(name: str, given: dict[str, Any], where: str) -> Periodic:
    unknown = sorted(set(given) - set(SCHEDULE_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field {', '.join(unknown)} (known: {', '.join(SCHEDULE_FIELDS)})")
    for required in ("task", "cron"):
        if required not in given:
            raise ConfigError(f"{where}: {required!r} is required, e.g. " + '{"task": "add", "cron": "0 * * * *"}')
    if not isinstance(given["task"], str):
        raise ConfigError(f"{where}: task must be the name of a task type")
    args = given.get("args", {})
    if not isinstance(args, dict):
        raise ConfigError(f"{where}: args must be a JSON object of the task's arguments")
    options = {option: given[option] for option in SCHEDULE_OPTIONS if option in given}
    return Periodic(name, given["task"], given["cron"], args, options)


def _new_task(entry: Periodic, tick: datetime, settings: Settings, registry: Registry) -> enqueue.NewTask:
    """The entry's task for a tick, checked by the API's own code (ApiError when it would be refused)."""
    # The schedule is the operator's own configuration: a protected type is allowed, as a token allowing
    # that type would allow it (auth.allows).
    claims = {"allowed_tasks": {entry.task: True}}
    return enqueue.parse_new_task(entry.body(tick), registry, settings, claims)


# The checked schedule of the settings and registry last given, so enqueue_due checks it once per process.
_checked: tuple[Settings, Registry, list[Periodic]] | None = None


def schedule(settings: Settings, registry: Registry) -> list[Periodic]:
    """check_schedule's entries, computed once for these settings and this registry."""
    global _checked
    cached = _checked
    if cached is not None and cached[0] is settings and cached[1] is registry:
        return cached[2]
    entries = check_schedule(settings, registry)
    _checked = (settings, registry, entries)
    return entries


# -- enqueueing ---------------------------------------------------------------------------------


def enqueue_due(
    conn: psycopg2.extensions.connection, settings: Settings, registry: Registry, now: datetime | None = None
) -> int:
    """Enqueue the task of each entry whose latest tick is not done yet; how many tasks were enqueued.

    conn is an autocommit connection; each entry's tick is taken in a transaction of its own.
    now: the time to take as now (tests' fake clock); by default the database's clock.
    """
    entries = schedule(settings, registry)
    if not entries:
        return 0
    clock, stored = stored_ticks(conn, [entry.name for entry in entries])
    now = clock if now is None else now
    enqueued = 0
    for entry in entries:
        due = due_tick(entry.cron, stored.get(entry.name), now)
        if due is None:
            continue
        tick, run = due
        # A new entry: record its latest past tick without running it. Another janitor may have
        # recorded it a moment before: then this one goes on as for any entry.
        if not run and db.run(conn, "first_periodic_tick", {"name": entry.name, "tick": tick}):
            log.info("periodic %s: first seen; its first task is at %s", entry.name, _show(entry.next_tick(tick)))
            continue
        enqueued += enqueue_tick(conn, entry, tick, settings, registry, stored.get(entry.name))
    return enqueued


def stored_ticks(conn: psycopg2.extensions.connection, names: Iterable[str]) -> tuple[datetime, dict[str, datetime]]:
    """The database's clock, and the last tick done of each of these entries that has one."""
    rows = db.run(conn, "periodic_ticks", {"names": list(names)})
    return rows[0][0], {name: last for _, name, last in rows if name is not None}


def enqueue_tick(
    conn: psycopg2.extensions.connection,
    entry: Periodic,
    tick: datetime,
    settings: Settings,
    registry: Registry,
    last: datetime | None = None,
) -> int:
    """In one transaction: take the tick (its last_tick moves forward to it) and enqueue its task.

    1 if this call enqueued it; 0 if another janitor took the tick first, or the task could not be
    stored (then the tick is recorded as done all the same, with a warning: the next tick tries again).
    """
    try:
        with conn:  # a transaction, also on an autocommit connection (psycopg2 >= 2.9)
            if not db.run(conn, "advance_periodic_tick", {"name": entry.name, "tick": tick}):
                return 0  # taken by another janitor (it waited on our row lock, or we on its)
            new = _new_task(entry, tick, settings, registry)
            (task, created), *_ = enqueue.store_tasks(lambda: conn, [new], settings, PERIODIC_SUBJECT)
    except ApiError as err:  # e.g. its idempotency key taken by a client's task of another type
        if db.run(conn, "advance_periodic_tick", {"name": entry.name, "tick": tick}):
            log.warning("periodic %s: the task for %s was not enqueued: %s", entry.name, _show(tick), err.message)
        return 0
    if not created:  # the second guard: the tick's task exists (periodic_ticks was reset?)
        log.info("periodic %s: the task for %s was enqueued before: %s", entry.name, _show(tick), task["id"])
        return 0
    skipped = ""
    if last is not None and latest_tick(entry.cron, tick - timedelta(seconds=1)) > last:
        skipped = f" (ticks after {_show(last)} were missed and are not enqueued: only the latest)"
    log.info("periodic %s: enqueued %s task %s for %s%s", entry.name, entry.task, task["id"], _show(tick), skipped)
    return 1


def _show(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
