"""Periodic tasks: ticks of cron expressions with a fake clock; the schedule's checks; exactly one task per
tick from concurrent janitors, across a restart and after a gap, on a real PostgreSQL; real janitor processes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from flask_tasks import db, periodic
from flask_tasks.config import ConfigError
from flask_tasks.periodic import Periodic, check_cron, check_schedule, due_tick, enqueue_due, latest_tick, next_tick
from flask_tasks.registry import Registry, TaskLoadError
from tests.conftest import enqueue, query, wait_for
from tests.helpers import in_threads


def at(text: str) -> datetime:
    """A moment in UTC from "2024-01-01 12:00:00[.ffffff]"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def make_registry() -> Registry:
    """Task types of our own, in a registry of their own (the tests' shared registry stays as it is)."""
    reg = Registry()

    @reg.task(cron="*/5 * * * *", max_attempts=2, timeout=7)
    def sweep(older_than: int = 3600) -> int:
        """Every five minutes."""
        return older_than

    @reg.task
    def add(x: int, y: int) -> int:
        return x + y

    @reg.task(protected=True)
    def secret(n: int) -> int:
        return n

    return reg


# -- ticks with a fake clock (no database) -----------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "now", "tick"),
    [
        ("*/5 * * * *", "2024-01-01 12:00:00", "2024-01-01 12:00:00"),  # a tick at now counts: at or before
        ("*/5 * * * *", "2024-01-01 11:59:59.999999", "2024-01-01 11:55:00"),
        ("*/5 * * * *", "2024-01-01 12:04:59.5", "2024-01-01 12:00:00"),
        ("* * * * * */1", "2024-01-01 12:00:00.5", "2024-01-01 12:00:00"),
        ("* * * * * */10", "2024-01-01 12:00:09.999", "2024-01-01 12:00:00"),
        ("* * * * * */10", "2024-01-01 12:00:10", "2024-01-01 12:00:10"),
        ("0 0 * * *", "2024-03-01 00:00:00", "2024-03-01 00:00:00"),
        ("0 0 29 2 *", "2025-06-01 00:00:00", "2024-02-29 00:00:00"),  # a leap day, a year back
        ("@hourly", "2024-01-01 12:59:59", "2024-01-01 12:00:00"),
        ("30 9 * * 1-5", "2024-01-07 10:00:00", "2024-01-05 09:30:00"),  # Sunday: Friday's
    ],
)
def test_latest_tick_is_at_or_before_now(cron, now, tick):
    assert latest_tick(cron, at(now)) == at(tick)


def test_ticks_are_in_utc_whatever_the_time_zone_of_now():
    paris = datetime(2024, 7, 1, 2, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    assert latest_tick("0 * * * *", paris) == at("2024-07-01 02:00:00")
    assert next_tick("0 * * * *", paris) == at("2024-07-01 03:00:00")
    with pytest.raises(ValueError, match="naive"):
        latest_tick("* * * * *", datetime(2024, 1, 1))


def test_a_new_entry_records_its_latest_past_tick_and_runs_from_the_next():
    assert due_tick("0 0 * * *", None, at("2024-01-01 15:00:00")) == (at("2024-01-01 00:00:00"), False)


def simulate(cron: str, times: list[datetime]) -> list[datetime]:
    """The ticks enqueued by calls at these times, with the last tick kept as periodic_ticks keeps it."""
    last, enqueued = None, []
    for now in times:
        due = due_tick(cron, last, now)
        if due is not None:
            last, run = due
            if run:
                enqueued.append(last)
    return enqueued


def test_calls_at_irregular_times_enqueue_each_tick_once():
    times = [at(t) for t in ("2024-01-01 12:03:10", "2024-01-01 12:04:59", "2024-01-01 12:05:00")]
    times += [at(t) for t in ("2024-01-01 12:05:00.9", "2024-01-01 12:05:07", "2024-01-01 12:09:59.999")]
    times += [at(t) for t in ("2024-01-01 12:10:00.5", "2024-01-01 12:10:00.6", "2024-01-01 12:14:00")]
    assert simulate("*/5 * * * *", times) == [at("2024-01-01 12:05:00"), at("2024-01-01 12:10:00")]


def test_a_gap_enqueues_only_the_latest_tick():
    times = [at("2024-01-01 12:03:10"), at("2024-01-01 12:05:01"), at("2024-01-01 15:47:00")]
    assert simulate("*/5 * * * *", times) == [at("2024-01-01 12:05:00"), at("2024-01-01 15:45:00")]


def test_called_often_enough_every_tick_is_enqueued_once_however_irregular_the_calls():
    rng = random.Random(12)
    now, times = at("2024-01-01 00:00:00.3"), []
    for _ in range(5000):
        now += timedelta(seconds=rng.uniform(0.0, 1.0))  # at most a second between calls
        times.append(now)
    enqueued = simulate("* * * * * */1", times)
    # Every second after the first call, up to the last: none missed, none twice.
    first = times[0].replace(microsecond=0) + timedelta(seconds=1)
    count = int((times[-1].replace(microsecond=0) - first).total_seconds()) + 1
    assert enqueued == [first + timedelta(seconds=i) for i in range(count)]


def test_rare_calls_enqueue_at_most_one_task_per_call_and_never_a_future_tick():
    rng = random.Random(7)
    now, last_enqueued = at("2024-01-01 00:00:00"), None
    last = None
    for _ in range(2000):
        now += timedelta(seconds=rng.choice([0.2, 3, 59, 61, 299, 301, 3600, 86400]))
        due = due_tick("*/5 * * * *", last, now)
        if due is None:
            continue
        last, run = due
        assert last <= now and now - last < timedelta(minutes=5)
        if run:
            assert last_enqueued is None or last > last_enqueued
            last_enqueued = last


def test_tick_keys_name_the_entry_and_the_tick_in_utc():
    assert periodic.tick_key("nightly", at("2024-01-01 00:00:00")) == "periodic:nightly:2024-01-01T00:00:00Z"


# -- cron expressions and the schedule -----------------------------------------------------------


@pytest.mark.parametrize("cron", ["*/5 * * * *", "0 9 * * mon-fri", "* * * * * */1", "0 0 1 1 * 30", "@daily"])
def test_good_cron_expressions(cron):
    check_cron(cron, "here")


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * *", "has 4 fields: give 5"),
        ("* * * * * * 2030", "has 7 fields"),
        ("61 * * * *", "is not valid"),
        ("*/0 * * * *", "is not valid"),
        ("0 0 31 2 *", "never comes"),  # February 31st
        ("every day", "has 2 fields"),
        ("@reboot", "is not one of @yearly"),
        ("", "not ''"),
        (5, "not 5"),
    ],
)
def test_bad_cron_expressions_are_config_errors_naming_the_entry(cron, message):
    with pytest.raises(ConfigError, match=f"^here: .*{message}"):
        check_cron(cron, "here")


def test_cron_on_task_is_described_and_checked_at_registration():
    reg = make_registry()
    assert reg.get("sweep").cron == "*/5 * * * *"
    assert reg.describe()["sweep"]["cron"] == "*/5 * * * *"
    assert reg.describe()["add"]["cron"] is None
    with pytest.raises(ConfigError, match=r"task tick: cron '\* \* \*' has 3 fields"):

        @reg.task(cron="* * *")
        def tick() -> None: ...

    with pytest.raises(TypeError, match="task report: cron= enqueues it with no arguments, but it requires day"):

        @reg.task(cron="0 0 * * *")
        def report(day: str, verbose: bool = False) -> None: ...

    assert reg.names() == ["add", "secret", "sweep"]


def test_a_task_module_with_a_bad_cron_does_not_load(tmp_path, monkeypatch):
    from flask_tasks.registry import load_tasks

    (tmp_path / "bad_cron_tasks.py").write_text(
        "from flask_tasks import task\n\n@task(cron='61 * * * *')\ndef late() -> None: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TaskLoadError, match=r"cannot load TASKS_MODULE=bad_cron_tasks: task late: cron '61"):
        load_tasks("bad_cron_tasks", packs=False)


def test_the_schedule_has_the_decorated_types_and_the_schedule_entries(settings):
    schedule = {
        "adder": {"task": "add", "cron": "* * * * * */10", "args": {"x": 1, "y": 2}, "priority": 5},
        "sweep-daily": {"task": "sweep", "cron": "@daily", "args": {"older_than": 86400}, "max_attempts": 1},
        "secret": {"task": "secret", "cron": "0 * * * *", "args": {"n": 1}},  # a protected type: the operator's own
    }
    entries = check_schedule(dataclasses.replace(settings, schedule=schedule), make_registry())
    assert entries == [
        Periodic("sweep", "sweep", "*/5 * * * *", {}, {}, "@task(cron=...)"),
        Periodic("adder", "add", "* * * * * */10", {"x": 1, "y": 2}, {"priority": 5}),
        Periodic("sweep-daily", "sweep", "@daily", {"older_than": 86400}, {"max_attempts": 1}),
        Periodic("secret", "secret", "0 * * * *", {"n": 1}),
    ]
    assert check_schedule(settings, Registry()) == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"task": "add", "cron": "0 * * * *"}, r"SCHEDULE\[x\]: the required param \[x\] was not passed."),
        ({"task": "add", "cron": "0 * * * *", "args": {"x": 1, "y": "2"}}, r"param \[y\] doesnt match"),
        ({"task": "nope", "cron": "0 * * * *"}, r"SCHEDULE\[x\]: task type \[nope\] doesnt exist"),
        ({"task": "sweep", "cron": "0 * * *"}, r"SCHEDULE\[x\]: cron '0 \* \* \*' has 4 fields"),
        ({"task": "sweep"}, r"SCHEDULE\[x\]: 'cron' is required"),
        ({"cron": "0 * * * *"}, r"SCHEDULE\[x\]: 'task' is required"),
        ({"task": "sweep", "cron": "0 * * * *", "when": 1}, r"SCHEDULE\[x\]: unknown field when \(known: task"),
        ({"task": "sweep", "cron": "0 * * * *", "args": [1]}, r"SCHEDULE\[x\]: args must be a JSON object"),
        ({"task": "sweep", "cron": "0 * * * *", "priority": 5000}, r"SCHEDULE\[x\]: .*priority"),
        ({"task": ["sweep"], "cron": "0 * * * *"}, r"SCHEDULE\[x\]: task must be the name of a task type"),
    ],
)
def test_a_bad_schedule_entry_is_a_config_error_naming_it(settings, entry, message):
    with pytest.raises(ConfigError, match=message):
        check_schedule(dataclasses.replace(settings, schedule={"x": entry}), make_registry())


def test_a_schedule_entry_may_not_take_the_name_of_a_decorated_type(settings):
    schedule = {"sweep": {"task": "sweep", "cron": "0 0 * * *"}}
    with pytest.raises(ConfigError, match=r"SCHEDULE\[sweep\]: the name is taken by the task type sweep"):
        check_schedule(dataclasses.replace(settings, schedule=schedule), make_registry())


def test_a_schedule_entry_name_fits_in_an_idempotency_key(settings):
    schedule = {"n" * 201: {"task": "sweep", "cron": "0 0 * * *"}}
    with pytest.raises(ConfigError, match="a name must have 1 to 200 characters"):
        check_schedule(dataclasses.replace(settings, schedule=schedule), make_registry())


# -- on a real PostgreSQL ---------------------------------------------------------------------


def tasks(conn) -> list[tuple]:
    return query(conn, "SELECT type, args, idempotency_key, status FROM tasks ORDER BY idempotency_key")


def last_tick(conn, name: str) -> datetime | None:
    rows = query(conn, "SELECT last_tick FROM periodic_ticks WHERE name = %s", (name,))
    return rows[0][0] if rows else None


def test_a_new_entry_waits_for_its_next_tick_then_enqueues_one_task_per_tick(conn, settings):
    reg = make_registry()
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 12:03:10")) == 0
    assert last_tick(conn, "sweep") == at("2024-01-01 12:00:00")  # recorded as done, not run
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 12:04:59.9")) == 0
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 12:05:00")) == 1
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 12:05:00.5")) == 0
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 12:10:01")) == 1
    assert tasks(conn) == [
        ("sweep", {"older_than": 3600}, "periodic:sweep:2024-01-01T12:05:00Z", "waiting"),
        ("sweep", {"older_than": 3600}, "periodic:sweep:2024-01-01T12:10:00Z", "waiting"),
    ]


def test_a_periodic_task_is_an_ordinary_task(conn, settings):
    schedule = {"adder": {"task": "add", "cron": "* * * * * */10", "args": {"x": 1, "y": 2}, "priority": 5}}
    settings = dataclasses.replace(settings, schedule=schedule)
    reg = make_registry()
    enqueue_due(conn, settings, reg, now=at("2024-01-01 12:00:01"))
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 12:05:00.2")) == 2  # sweep and adder
    rows = query(
        conn,
        """SELECT type, args, priority, max_attempts, timeout, subject, status,
                  round(extract(epoch FROM expire - created))::int
           FROM tasks ORDER BY type""",
    )
    assert rows == [
        ("add", {"x": 1, "y": 2}, 5, settings.max_attempts, None, ":periodic", "waiting", settings.max_task_time),
        ("sweep", {"older_than": 3600}, 0, 2, 7.0, ":periodic", "waiting", settings.max_task_time),  # its options
    ]
    (task_id,) = query(conn, "SELECT id::text FROM tasks WHERE type = 'add'")[0]
    # As GET /task/<id> reads it.
    (answer,) = db.run_dicts(conn, "get_task", {"id": task_id, "subject": None, "operator": True})
    assert (answer["type"], answer["status"], answer["args"]) == ("add", "waiting", {"x": 1, "y": 2})


def test_a_protected_type_is_enqueued_from_the_schedule(conn, settings):
    settings = dataclasses.replace(settings, schedule={"s": {"task": "secret", "cron": "0 * * * *", "args": {"n": 4}}})
    reg = make_registry()
    enqueue_due(conn, settings, reg, now=at("2024-01-01 12:00:01"))
    enqueue_due(conn, settings, reg, now=at("2024-01-01 13:00:01"))
    assert ("secret", {"n": 4}, "periodic:s:2024-01-01T13:00:00Z", "waiting") in tasks(conn)


def call_together(database_url: str, settings, reg: Registry, now: datetime, janitors: int) -> list[int]:
    """enqueue_due from `janitors` threads, each with its own connection, all at once; what each returned."""
    conns = [db.connect(database_url, f"janitor {i}", prepare=i % 2 == 0) for i in range(janitors)]
    results: list[int] = [0] * janitors

    def janitor(i: int) -> None:
        results[i] = enqueue_due(conns[i], settings, reg, now=now)

    try:
        in_threads(janitors, janitor)
    finally:
        for c in conns:
            c.close()
    return results


def test_concurrent_janitors_enqueue_exactly_one_task_per_tick(conn, database_url, settings):
    schedule = {"adder": {"task": "add", "cron": "* * * * * */1", "args": {"x": 1, "y": 2}}}
    settings = dataclasses.replace(settings, schedule=schedule)
    reg = make_registry()
    start = at("2024-01-01 12:04:57.5")
    # The first call of all (no row yet): every janitor races to record the entries, none enqueues.
    assert sum(call_together(database_url, settings, reg, start, 8)) == 0
    for second in range(1, 6):
        results = call_together(database_url, settings, reg, start + timedelta(seconds=second), 8)
        assert sum(results) == (2 if second == 3 else 1), results  # at 12:05:00 the five-minute sweep too
    keys = [key for _, _, key, _ in tasks(conn)]
    adder = [f"periodic:adder:2024-01-01T12:0{t}Z" for t in ("4:58", "4:59", "5:00", "5:01", "5:02")]
    assert keys == [*adder, "periodic:sweep:2024-01-01T12:05:00Z"]


def test_a_janitor_waits_for_one_that_is_taking_the_same_tick_then_finds_it_taken(conn, database_url, settings):
    reg = make_registry()
    enqueue_due(conn, settings, reg, now=at("2024-01-01 12:00:01"))
    holder = db.connect(database_url, "janitor holding the tick")
    holder.autocommit = False
    db.run(holder, "advance_periodic_tick", {"name": "sweep", "tick": at("2024-01-01 12:05:00")})  # not committed
    other = db.connect(database_url, "other janitor")
    results: list[int] = []
    thread = threading.Thread(
        target=lambda: results.append(enqueue_due(other, settings, reg, at("2024-01-01 12:05:01")))
    )
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # waiting on the row lock
    holder.commit()
    thread.join(10)
    assert results == [0]  # the tick was taken: the other janitor enqueues nothing
    holder.close()
    other.close()


def test_a_restart_neither_repeats_nor_skips_a_tick(conn, database_url, settings):
    reg = make_registry()
    enqueue_due(conn, settings, reg, now=at("2024-01-01 12:00:01"))
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 12:05:01")) == 1
    # A new process: nothing kept in memory (new settings, a registry loaded again, a new connection).
    periodic._checked = None
    restarted = db.connect(database_url, "janitor after restart")
    settings2, reg2 = dataclasses.replace(settings), make_registry()
    assert enqueue_due(restarted, settings2, reg2, now=at("2024-01-01 12:05:02")) == 0  # that tick is done
    assert enqueue_due(restarted, settings2, reg2, now=at("2024-01-01 12:09:59")) == 0
    assert enqueue_due(restarted, settings2, reg2, now=at("2024-01-01 12:10:00")) == 1
    restarted.close()
    assert [key for _, _, key, _ in tasks(conn)] == [
        "periodic:sweep:2024-01-01T12:05:00Z",
        "periodic:sweep:2024-01-01T12:10:00Z",
    ]


def test_ticks_missed_while_down_are_enqueued_once(conn, settings, caplog):
    caplog.set_level(logging.INFO, logger="flask_tasks.periodic")
    reg = make_registry()
    enqueue_due(conn, settings, reg, now=at("2024-01-01 12:00:01"))
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 12:05:01")) == 1
    # Everything down for three hours: 35 ticks missed, and one task for the latest.
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 15:07:00")) == 1
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 15:07:30")) == 0
    assert [key for _, _, key, _ in tasks(conn)] == [
        "periodic:sweep:2024-01-01T12:05:00Z",
        "periodic:sweep:2024-01-01T15:05:00Z",
    ]
    assert "ticks after 2024-01-01 12:05:00 UTC were missed and are not enqueued: only the latest" in caplog.text


def test_the_idempotency_key_guards_a_tick_whose_record_was_reset(conn, settings, caplog):
    caplog.set_level(logging.INFO, logger="flask_tasks.periodic")
    reg = make_registry()
    enqueue_due(conn, settings, reg, now=at("2024-01-01 12:00:01"))
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 12:05:01")) == 1
    query(conn, "UPDATE periodic_ticks SET last_tick = '2024-01-01 12:00:00+00'")  # an operator's mistake
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 12:05:02")) == 0
    assert len(tasks(conn)) == 1
    assert last_tick(conn, "sweep") == at("2024-01-01 12:05:00")
    assert "the task for 2024-01-01 12:05:00 UTC was enqueued before" in caplog.text


def test_a_client_cannot_take_a_ticks_key_first(conn, settings):
    # The key of a coming tick is easy to guess; a client's task with it must not stop the tick's task.
    reg = make_registry()
    enqueue_due(conn, settings, reg, now=at("2024-01-01 12:00:01"))
    key = "periodic:sweep:2024-01-01T12:05:00Z"
    enqueue(conn, "add", {"x": 1, "y": 1}, idempotency_key=key)  # as POST /task would, without a token
    assert enqueue_due(conn, settings, reg, now=at("2024-01-01 12:05:01")) == 1
    rows = query(conn, "SELECT type, subject FROM tasks WHERE idempotency_key = %s ORDER BY type", (key,))
    assert rows == [("add", None), ("sweep", ":periodic")]


def test_the_database_clock_is_the_default(conn, settings):
    reg = make_registry()
    assert enqueue_due(conn, settings, reg) == 0
    (now,) = query(conn, "SELECT now()")[0]
    assert latest_tick("*/5 * * * *", now - timedelta(seconds=5)) <= last_tick(conn, "sweep") <= now


def test_no_schedule_no_query(conn, settings):
    assert enqueue_due(conn, settings, Registry()) == 0


# -- real janitor processes -------------------------------------------------------------------

PERIODIC_MODULES = "tests.sidefx_tasks,tests.periodic_tasks"


def test_janitor_processes_enqueue_each_tick_once_and_a_gap_once(conn, processes):
    schedule = json.dumps({"adder": {"task": "add", "cron": "* * * * * */2", "args": {"x": 20, "y": 22}}})
    env = {"TASKS_MODULE": PERIODIC_MODULES, "SCHEDULE": schedule, "JANITOR_INTERVAL": "0.2"}
    janitors = [processes.start("janitor.py", **env) for _ in range(2)]
    processes.start("handler.py", **env)
    keys = "SELECT idempotency_key FROM tasks WHERE idempotency_key LIKE 'periodic:every_second:%' ORDER BY 1"
    wait_for(lambda: len(query(conn, keys)) >= 4, timeout=30)
    for janitor in janitors:
        janitor.send_signal(signal.SIGTERM)
    for janitor in janitors:
        assert janitor.wait(timeout=10) == 0, processes.output(janitor)
    before = [key for (key,) in query(conn, keys)]
    time.sleep(3.5)  # everything down: three ticks of every_second go by
    (restart,) = query(conn, "SELECT now()")[0]
    processes.start("janitor.py", **env)
    wait_for(lambda: len(query(conn, keys)) > len(before), timeout=30)
    after = [key for (key,) in query(conn, keys)][len(before) :]
    first_after = datetime.strptime(after[0].split(":", 2)[2], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    # The missed ticks were not enqueued: the first task after the restart is for the latest tick.
    assert first_after >= restart.replace(microsecond=0), (before, after, restart)
    # Two janitors, one task per tick: every tick's task once (the unique key would refuse a second,
    # so look at the logs too: no janitor found a tick's task already there).
    logs = "".join(processes.output(p) for p in processes.started if "janitor" in str(p.args))
    assert "was enqueued before" not in logs and "was not enqueued" not in logs, logs
    enqueued_lines = [line for line in logs.splitlines() if "periodic every_second: enqueued" in line]
    assert len(enqueued_lines) == len(query(conn, keys)), logs
    # The tasks are ordinary tasks: a handler runs them, and the SCHEDULE entry's too, with its arguments.
    wait_for(lambda: query(conn, "SELECT 1 FROM tasks WHERE type = 'every_second' AND status = 'done'"), timeout=30)
    wait_for(lambda: query(conn, "SELECT result FROM tasks WHERE type = 'add' AND status = 'done'"), timeout=30)
    assert query(conn, "SELECT DISTINCT result FROM tasks WHERE type = 'add' AND status = 'done'") == [(42,)]


def test_a_janitor_with_a_bad_schedule_stops_with_one_line(processes):
    schedule = json.dumps({"x": {"task": "nope", "cron": "* * * * *"}})
    janitor = processes.start("janitor.py", SCHEDULE=schedule)
    assert janitor.wait(timeout=30) != 0
    output = processes.output(janitor).strip()
    assert "SCHEDULE[x]: task type [nope] doesnt exist" in output
    assert len(output.splitlines()) == 1, output
