"""`flask --app app tasks ...`: the operator's command line, run as a real process on the test database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from flask_tasks import shape
from flask_tasks.config import PROJECT_DIR
from flask_tasks.registry import load_tasks
from flask_tasks.tasks_cli import age, cut, duration, parse_args, parse_value, printable, table
from tests.conftest import TEST_TASKS, enqueue, query, wait_for

VENV_BIN = os.path.dirname(sys.executable)  # where flask lives
APP = "app"


def cli(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """One run of `flask --app app tasks ARGS...` with the test's environment."""
    return subprocess.run(
        [f"{VENV_BIN}/flask", "--app", APP, "tasks", *args],
        cwd=PROJECT_DIR,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(env: dict[str, str], *args: str) -> str:
    """Its stdout, once it exited 0."""
    done = cli(env, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def ok_json(env: dict[str, str], *args: str) -> object:
    """Its stdout as JSON (nothing else may be printed there) with --json, once it exited 0."""
    return json.loads(ok(env, *args, "--json"))


def refused(env: dict[str, str], *args: str, status: int, says: str, input: str | None = None) -> str:
    """It exited with `status` and said `says` on stderr, with no traceback; its stderr."""
    done = cli(env, *args, input=input)
    assert done.returncode == status, done.stdout + done.stderr
    assert says in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return done.stderr


def task_row(conn, task_id: str) -> dict:
    names = ("status", "args", "priority", "result", "attempts", "cancel_requested", "subject")
    row = query(conn, f"SELECT {', '.join(names)} FROM tasks WHERE id = %s", (task_id,))
    return dict(zip(names, row[0], strict=True)) if row else {}


def finish(conn, task_id: str, status: str, result: object = None, message: str | None = None) -> None:
    """End a task as a handler would have (for tests about what comes after)."""
    error = json.dumps({"message": message}) if message else None
    query(
        conn,
        """UPDATE tasks SET status = %s, result = %s::jsonb, last_error = %s::jsonb, attempts = 1,
                  started = now(), finished = now() WHERE id = %s RETURNING id""",
        (status, json.dumps(result), error, task_id),
    )


@pytest.fixture
def env(base_env: dict[str, str]) -> dict[str, str]:
    # Count the tasks at each `stats` run rather than reuse a count of the last 5 s.
    return {**base_env, "STATS_INTERVAL": "0.1"}


# -- what needs no database ---------------------------------------------------------------


def test_values_are_json_when_they_parse():
    assert parse_value("3") == 3
    assert parse_value("2.5") == 2.5
    assert parse_value("[1,2]") == [1, 2]
    assert parse_value('{"a": null}') == {"a": None}
    assert parse_value("true") is True
    assert parse_value('"x"') == "x"
    assert parse_value("x") == "x"
    assert parse_value("") == ""
    assert parse_value("NaN") == "NaN"  # not JSON: text
    # An argument that takes a string gets the text as typed, unless it is a JSON string.
    assert parse_value("123", {"string"}) == "123"
    assert parse_value('"123"', {"string"}) == "123"
    assert parse_value("null", {"string", "null"}) is None


def test_key_value_pairs_follow_the_task_type():
    registry = load_tasks(TEST_TASKS)
    assert parse_args(["x=1", "y=-2"], registry.get("add")) == {"x": 1, "y": -2}
    assert parse_args(["required_arg=123"], registry.get("echo")) == {"required_arg": "123"}
    assert parse_args(["r0=[0,0,1]", "drag=true"], registry.get("mov3d"), {"dt": 0.1}) == {
        "dt": 0.1,
        "r0": [0, 0, 1],
        "drag": True,
    }
    assert parse_args(["s=a=b"], None) == {"s": "a=b"}  # only the first = splits


def test_times_and_tables_read_well():
    assert [duration(s) for s in (0.25, 42, 185, 7800, 360000)] == ["0.2s", "42s", "3m05s", "2h10m", "4d04h"]
    assert age(None) == "-"
    assert age(1000.0, now=1000.4) == "now"
    assert age(1000.0, now=1003.0) == "3s ago"
    assert age(1120.0, now=1000.0) == "in 2m00s"
    assert cut("a" * 50, 10) == "aaaaaaa..."
    assert cut("two\nlines") == "two lines"
    # What clients and task code wrote must not drive the operator's terminal.
    assert printable("a\x1b[2Jb\nc\x9b\u202e") == "a\\x1b[2Jb\nc\\x9b\\u202e"
    assert table(["x"], [["\x1b[31mred"]]).splitlines()[1] == "\\x1b[31mred"
    assert table(["name", "n"], [["a", 1], ["bbb", 22]], right=["n"]).splitlines() == [
        "NAME   N",
        "a      1",
        "bbb   22",
    ]


# -- submit ---------------------------------------------------------------------------------


def test_submit_stores_what_post_task_would(env, conn):
    task_id = ok(env, "submit", "add", "x=1", "y=2", "--priority", "5", "--delay", "60").strip()
    row = task_row(conn, task_id)
    assert row["status"] == "waiting" and row["args"] == {"x": 1, "y": 2} and row["priority"] == 5
    assert query(conn, "SELECT run_at > now() + interval '50 s' FROM tasks WHERE id = %s", (task_id,))[0][0]

    # A string argument keeps the text as typed; lists and booleans are JSON; defaults are filled in.
    echo_id = ok(env, "submit", "echo", "required_arg=123").strip()
    assert task_row(conn, echo_id)["args"] == {"required_arg": "123"}
    mov3d = ok_json(env, "submit", "mov3d", "dt=0.1", "r0=[0,0,1]", "v0=[1,0,1]", "mass=1", "radius=0.1")
    assert mov3d["status"] == "waiting" and list(mov3d) == list(shape.FIELD_NAMES)
    assert task_row(conn, mov3d["id"])["args"]["drag"] is False

    # An operator needs no token for a protected type; nobody's subject is on the task.
    protected = ok(env, "submit", "multiply", "--args", '{"x": 2}', "y=3").strip()
    assert task_row(conn, protected)["args"] == {"x": 2, "y": 3} and task_row(conn, protected)["subject"] is None


def test_bad_input_is_refused_with_a_clear_message(env, conn):
    refused(env, "submit", "nope", status=2, says="[nope] is not a task type here; known: add,")
    refused(env, "submit", "add", "x", status=2, says="[x] is not key=value")
    refused(env, "submit", "add", "x=1", "x=2", status=2, says="the argument [x] is given twice")
    refused(env, "submit", "add", "x=1", "y=a", status=2, says="the passed param [y] doesnt match the required type")
    refused(env, "submit", "add", "x=1", status=2, says="the required param [y] was not passed")
    refused(env, "submit", "add", "--args", "[1]", status=2, says="must be a JSON object")
    refused(env, "submit", "add", "x=1", "y=2", "--priority", "5000", status=2, says="the field [priority] is invalid")
    assert query(conn, "SELECT count(*) FROM tasks")[0][0] == 0


def test_submit_wait_prints_the_result_and_exits_with_the_outcome(env, conn, processes):
    processes.start("handler.py")

    done = cli(env, "submit", "add", "x=1", "y=2", "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "3\n"
    assert "done (attempt 1 of 3)" in done.stderr

    failed = cli(env, "submit", "boom", "message=it broke", "--wait")
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout == ""
    assert "failed after 1 attempt(s): RuntimeError: it broke" in failed.stderr

    final = json.loads(cli(env, "submit", "boom", "--wait", "--json").stdout)
    assert final["status"] == "failed" and final["error"]["message"] == "RuntimeError: boom"

    # Waiting for less than the task takes: exit 3, and the task goes on.
    slow = cli(env, "submit", "sleep", "seconds=2", "--wait", "--timeout", "0.3", "--json")
    assert slow.returncode == 3, slow.stderr
    assert "gave up waiting after 0.3 s; the task goes on" in slow.stderr
    assert json.loads(slow.stdout)["status"] in shape.ACTIVE


def test_submit_wait_for_a_cancelled_task_exits_1(env, conn):
    # No handler runs sleep: it waits, and the CLI says why; a cancel ends the wait.
    waiting = subprocess.Popen(
        [f"{VENV_BIN}/flask", "--app", APP, "tasks", "submit", "sleep", "seconds=1", "--wait"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        task_id = wait_for(lambda: query(conn, "SELECT id::text FROM tasks"))[0][0]
        ok(env, "cancel", task_id)
        stdout, stderr = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 1, stderr
    assert "no live handler runs [sleep] now" in stderr
    assert f"task {task_id} cancelled" in stderr


# -- show, cancel ------------------------------------------------------------------------------


def test_show_prints_a_task_for_people_and_for_scripts(env, conn):
    task_id = enqueue(conn, "boom", {"message": "x" * 200})
    finish(conn, task_id, "failed", message="RuntimeError: " + "x" * 200)
    query(conn, "UPDATE tasks SET subject = 'alice' WHERE id = %s RETURNING id", (task_id,))

    text = ok(env, "show", task_id)
    lines = dict(line.split(None, 1) for line in text.splitlines() if line and not line[0].isspace() and " " in line)
    assert lines["id"] == task_id and lines["type"] == "boom" and lines["status"] == "failed"
    assert "posted by  alice" in text  # an operator sees every task, whoever posted it
    assert "RuntimeError: " + "x" * 200 in text  # show cuts nothing
    assert "attempts   1 of 1" in text
    assert re.search(r"\ncreated +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \((now|\d+s ago)\)\n", text)  # ISO and age

    shown = ok_json(env, "show", task_id)
    assert list(shown) == list(shape.FIELD_NAMES)  # as GET /task/<id> shows it
    assert shown["id"] == task_id and shown["error"]["message"].startswith("RuntimeError")

    refused(env, "show", "not-an-id", status=2, says="[not-an-id] is not a task id: task ids are UUIDs")
    missing = "00000000-0000-4000-8000-000000000000"
    refused(env, "show", missing, status=1, says=f"task [{missing}] not found")


def test_cancel_any_task_as_an_operator(env, conn):
    waiting = enqueue(conn, "add", {"x": 1, "y": 2}, delay=60)
    query(conn, "UPDATE tasks SET subject = 'alice' WHERE id = %s RETURNING id", (waiting,))
    assert ok(env, "cancel", waiting) == f"cancelled {waiting}\n"
    assert task_row(conn, waiting)["status"] == "cancelled"
    refused(env, "cancel", waiting, status=1, says="has already finished: it is cancelled")

    refused(env, "cancel", "00000000-0000-4000-8000-000000000000", status=1, says="not found")
    refused(env, "cancel", "123", status=2, says="is not a task id")


# -- list ----------------------------------------------------------------------------------------


def test_list_filters_and_pages(env, conn):
    done = enqueue(conn, "add", {"x": 1, "y": 2})
    finish(conn, done, "done", result=3)
    failed = enqueue(conn, "boom", {"message": "y" * 100})
    finish(conn, failed, "failed", message="RuntimeError: " + "y" * 100)
    waiting = enqueue(conn, "add", {"x": 5, "y": 6})

    text = ok(env, "list")
    header, *rows = text.splitlines()
    assert header.split() == ["ID", "TYPE", "STATUS", "TRIES", "CREATED", "ARGS", "OUTCOME"]
    assert [row.split()[0] for row in rows] == [waiting, failed, done]  # newest first
    assert [row.split()[2] for row in rows] == ["waiting", "failed", "done"]
    assert "RuntimeError: yyy" in text and "y" * 60 not in text  # long values cut
    assert max(len(line) for line in text.splitlines()) < 180

    listed = ok_json(env, "list", "--status", "failed,done")
    assert [task["id"] for task in listed["tasks"]] == [failed, done]
    assert list(listed["tasks"][0]) == list(shape.FIELD_NAMES) and listed["next"] is None
    assert [t["id"] for t in ok_json(env, "list", "--type", "add", "--status", "waiting")["tasks"]] == [waiting]
    assert ok(env, "list", "--type", "noop") == "no tasks match\n"

    # A page at a time: the cursor of one page gives the next.
    first = ok_json(env, "list", "--limit", "2")
    assert [t["id"] for t in first["tasks"]] == [waiting, failed] and first["next"]
    second = ok_json(env, "list", "--limit", "2", "--cursor", first["next"])
    assert [t["id"] for t in second["tasks"]] == [done] and second["next"] is None
    assert f"more: add --cursor {first['next']}" in ok(env, "list", "--limit", "2")

    refused(env, "list", "--status", "finished", status=2, says="status")
    refused(env, "list", "--limit", "501", status=2, says="limit")
    refused(env, "list", "--since", "yesterday-ish", status=2, says="since")


# -- retry, purge ----------------------------------------------------------------------------------


def test_retry_a_failed_task(env, conn, processes):
    # record fails while its key is taken; once the key is free, a retry succeeds.
    query(conn, "INSERT INTO side_effects (key, pid) VALUES ('k', 0) RETURNING key")
    task_id = enqueue(conn, "record", {"key": "k"}, max_attempts=1)
    processes.start("handler.py")
    wait_for(lambda: task_row(conn, task_id)["status"] == "failed")
    query(conn, "DELETE FROM side_effects WHERE key = 'k' RETURNING key")

    retried = ok_json(env, "retry", task_id)
    assert retried["id"] == task_id and retried["status"] == "waiting" and retried["attempts"] == 0
    wait_for(lambda: task_row(conn, task_id)["status"] == "done")
    assert task_row(conn, task_id)["result"] == "k"

    refused(env, "retry", task_id, status=1, says="only a failed or cancelled task can be retried")
    refused(env, "retry", "00000000-0000-4000-8000-000000000000", status=1, says="not found")
    refused(env, "retry", "x", status=2, says="is not a task id")


def test_retry_prints_what_it_did(env, conn):
    task_id = enqueue(conn, "add", {"x": 1, "y": 2}, delay=60)
    ok(env, "cancel", task_id)
    assert ok(env, "retry", task_id) == f"retried {task_id}: it is waiting, for attempt 1 of 3\n"
    assert task_row(conn, task_id)["status"] == "waiting"


def test_purge_deletes_finished_tasks_matching_a_filter(env, conn):
    done = enqueue(conn, "add", {"x": 1, "y": 2})
    finish(conn, done, "done", result=3)
    failed = enqueue(conn, "boom")
    finish(conn, failed, "failed", message="RuntimeError: boom")
    waiting = enqueue(conn, "add", {"x": 1, "y": 2})

    def ids() -> set[str]:
        return {row[0] for row in query(conn, "SELECT id::text FROM tasks")}

    refused(env, "purge", "--yes", status=2, says="give a filter")
    refused(env, "purge", "--status", "waiting", "--yes", status=2, says="only finished tasks")
    refused(env, "purge", "--status", "done", status=1, says="Aborted", input="n\n")
    assert ids() == {done, failed, waiting}

    asked = cli(env, "purge", "--status", "done", input="y\n")
    assert asked.returncode == 0, asked.stderr
    assert "Delete the finished tasks matching status=done?" in asked.stderr  # the question is not on stdout
    assert asked.stdout == "deleted 1 task(s)\n"
    assert ids() == {failed, waiting}

    assert ok_json(env, "purge", "--all", "--yes") == {"deleted": 1}
    assert ids() == {waiting}  # waiting and running tasks are never purged


# -- workers, stats ------------------------------------------------------------------------------


def test_workers_and_stats(env, conn, processes):
    assert ok(env, "workers").startswith("no handler or janitor is running")
    assert ok_json(env, "workers") == {"workers": []}
    handler = processes.start("handler.py")
    task_id = enqueue(conn, "add", {"x": 1, "y": 2})
    enqueue(conn, "boom")
    enqueue(conn, "noop", delay=60)
    wait_for(lambda: task_row(conn, task_id)["status"] == "done")

    def handler_counted() -> list:
        found = ok_json(env, "workers")["workers"]
        return found if found and found[0]["tasks_done"] + found[0]["tasks_failed"] == 2 else []

    (worker,) = wait_for(handler_counted)
    assert worker["kind"] == "handler" and worker["alive"] is True and worker["pid"] == handler.pid
    assert worker["tasks_done"] == 1 and worker["tasks_failed"] == 1 and "add" in worker["task_types"]
    header, row = ok(env, "workers").splitlines()
    assert header.split() == ["NAME", "KIND", "HOST:PID", "STATE", "STARTED", "HEARTBEAT", "DONE", "FAILED", "RUNNING"]
    assert row.split()[:4] == [worker["name"], "handler", f"{worker['host']}:{handler.pid}", "alive"]
    assert row.split()[-3:] == ["1", "1", "-"]

    overview = ok_json(env, "stats")
    assert overview["statuses"] == {"waiting": 1, "running": 0, "done": 1, "failed": 1, "cancelled": 0}
    assert overview["types"]["add"]["done"] == 1 and overview["types"]["noop"]["waiting"] == 1
    assert sum(minute["done"] for minute in overview["throughput"]) == 1
    assert [w["id"] for w in overview["workers"]] == [worker["id"]]
    text = ok(env, "stats", "--fresh")
    lines = text.splitlines()
    assert lines[1].split() == ["TYPE", "WAITING", "RUNNING", "DONE", "FAILED", "CANCELLED"]
    assert [line.split() for line in lines if line.startswith(("(all)", "add "))] == [
        ["add", "0", "0", "1", "0", "0"],
        ["(all)", "1", "0", "1", "1", "0"],
    ]
    assert "last 60 minutes: 1 done, 1 failed" in text
    assert "alive: 1 handler(s), 0 janitor(s)" in text

    # Once it stops, it is gone from the list, and listed with --gone.
    processes.stop_all()
    assert ok_json(env, "workers") == {"workers": []}
    (gone,) = ok_json(env, "workers", "--gone")["workers"]
    assert gone["alive"] is False and gone["stopped"] is not None
    assert "stopped" in ok(env, "workers", "--gone")


def test_a_running_task_seen_and_cancelled(env, conn, processes):
    processes.start("handler.py")
    running = ok(env, "submit", "progress_steps", "steps=100", "pause=0.3").strip()
    wait_for(lambda: ok_json(env, "show", running)["progress"])

    shown = ok(env, "show", running)
    assert "status     running" in shown and "% step " in shown and " of 100 (updated " in shown
    (row,) = ok(env, "list", "--status", "running").splitlines()[1:]
    assert row.split()[:3] == [running, "progress_steps", "running"] and "% step " in row
    # The handler's row shows what it runs (from its next heartbeat on).
    assert "progress_steps (" in wait_for(lambda: "progress_steps" in (text := ok(env, "workers")) and text)

    assert ok(env, "cancel", running).startswith(f"asked {running} to stop: it is running")
    wait_for(lambda: task_row(conn, running)["status"] == "cancelled")
    assert "error      cancelled: stopped at the client's request" in ok(env, "show", running)


def test_what_clients_wrote_cannot_drive_the_terminal(env, conn):
    sneaky = "\x1b[2J\x9b31m\u202eevil"
    task_id = enqueue(conn, "echo", {"required_arg": sneaky})
    finish(conn, task_id, "failed", message=f"ValueError: {sneaky}")
    for args in (["list"], ["show", task_id], ["list", "--json"], ["show", task_id, "--json"]):
        out = ok(env, *args)
        assert not any(ch in out for ch in "\x1b\x9b\u202e"), args
    assert ok_json(env, "show", task_id)["args"]["required_arg"] == sneaky  # escaped, not changed
    assert "\\x1b[2J\\x9b31m\\u202eevil" in ok(env, "show", task_id)
