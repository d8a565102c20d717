"""LOG_FORMAT=json: every process (web under gunicorn, handler, janitor) writes one JSON object per line."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import uuid

from flask_tasks import logs
from flask_tasks.config import PROJECT_DIR
from flask_tasks.execution import TaskInfo, running
from tests.conftest import query, wait_for
from tests.helpers import free_port, http, start_web

TASK_MODULE = """
import logging

from flask_tasks import task

log = logging.getLogger("chatty")


@task
def chatty(n: int = 1) -> int:
    log.info("inside the task\\nsecond line %s", n, extra={"order": n})
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("caught it")
    return n


@task(isolated=True)
def chatty_isolated() -> int:
    log.warning("inside an isolated task")
    return 1
"""


def record(message: str = "hello", **attrs: object) -> logging.LogRecord:
    rec = logging.LogRecord("flask_tasks.test", logging.INFO, __file__, 1, message, None, None)
    rec.__dict__.update(attrs)
    return rec


def test_json_formatter_one_line_with_task_exception_and_extra() -> None:
    formatter = logs.JsonFormatter()
    plain = json.loads(formatter.format(record("a\nb")))
    assert plain["message"] == "a\nb" and plain["level"] == "INFO" and plain["logger"] == "flask_tasks.test"
    assert plain["time"].endswith("Z") and "T" in plain["time"]
    assert "task_id" not in plain and "exception" not in plain
    task_id = uuid.uuid4()
    with running(TaskInfo(task_id, "add", 1, 3)):
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            line = formatter.format(record("x", exc_info=sys.exc_info(), order=5, when=object()))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["task_id"] == str(task_id) and entry["task_type"] == "add"
    assert "ValueError: bad\nvalue" in entry["exception"] and entry["exception"].startswith("Traceback")
    assert entry["order"] == 5 and entry["when"].startswith("<object")  # an extra that JSON cannot hold: its str
    # A line about a task logged outside it names it with extra; an extra cannot replace a key of every line.
    about = json.loads(formatter.format(record("done", task_id="t-1", task_type="add", level=3, worker="x")))
    assert about["task_id"] == "t-1" and about["task_type"] == "add"
    assert about["level"] == "INFO" and about["worker"] == logs.Identity.worker


def test_process_kind_from_the_command_line() -> None:
    assert logs.guess_kind(["handler.py"]) == "handler"
    assert logs.guess_kind(["/app/janitor.py"]) == "janitor"
    assert logs.guess_kind(["/venv/bin/gunicorn", "app:app"]) == "web"
    assert logs.guess_kind(["/venv/bin/flask", "--app", "app", "run"]) == "web"
    assert logs.guess_kind(["/venv/bin/flask", "--app", "app", "tasks", "list"]) == "cli"
    assert logs.guess_kind(["/venv/lib/python3.11/site-packages/gunicorn/__main__.py", "app:app"]) == "web"


def parse_lines(text: str) -> list[dict]:
    """Every line of a process's output as a JSON object (fails on a line that is not one)."""
    entries = []
    for line in text.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{text}") from None
    return entries


def test_every_process_logs_json_lines(processes, base_env, tmp_path, conn) -> None:
    (tmp_path / "chatty_tasks.py").write_text(textwrap.dedent(TASK_MODULE))
    env = {
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(tmp_path),
        "TASKS_MODULE": f"{base_env['TASKS_MODULE']},chatty_tasks",
        "GUNICORN_WORKERS": "2",
    }
    port = free_port()
    web = start_web(processes, port, env)
    handler = processes.start("handler.py", WORKER_NAME="h-one", **env)
    query(conn, "INSERT INTO tasks (type, status, expire) VALUES ('add', 'done', now() - interval '1 s')")
    janitor = processes.start("janitor.py", WORKER_NAME="j-one", JANITOR_INTERVAL="0.2", **env)
    base = f"http://127.0.0.1:{port}"
    ids = [http("POST", f"{base}/task/new", {"type": t, "args": {}})[1]["id"] for t in ("chatty", "chatty_isolated")]
    ids.append(http("POST", f"{base}/task/new", {"type": "boom", "args": {}})[1]["id"])
    wait_for(lambda: all(http("GET", f"{base}/task/{i}")[1]["status"] in ("done", "failed") for i in ids))
    wait_for(lambda: "deleted 1 expired tasks" in processes.output(janitor))  # it is up: a SIGTERM now is handled
    for proc in (web, handler, janitor):
        proc.send_signal(signal.SIGTERM)
    for proc in (web, handler, janitor):
        assert proc.wait(timeout=15) == 0, processes.output(proc)

    web_lines = parse_lines(processes.output(web))
    assert {e["process"] for e in web_lines} == {"web"}
    assert any(e["logger"] == "gunicorn.error" and "Booting worker" in e["message"] for e in web_lines)
    assert len({e["pid"] for e in web_lines}) >= 2  # the master and its workers
    for entry in web_lines:
        assert set(entry) >= {"time", "level", "logger", "message", "process", "worker", "pid"}

    handler_lines = parse_lines(processes.output(handler))
    assert {e["process"] for e in handler_lines} == {"handler h-one"}
    assert {e["worker"] for e in handler_lines} == {"h-one"}
    inside = [e for e in handler_lines if e["logger"] == "chatty"]
    by_message = {e["message"]: e for e in inside}
    first = by_message["inside the task\nsecond line 1"]
    assert first["task_id"] == ids[0] and first["task_type"] == "chatty" and first["order"] == 1
    caught = by_message["caught it"]
    assert caught["level"] == "ERROR" and "ZeroDivisionError" in caught["exception"] and caught["task_id"] == ids[0]
    isolated = by_message["inside an isolated task"]  # written by the forked child, with the task it runs
    assert isolated["task_id"] == ids[1] and isolated["task_type"] == "chatty_isolated"
    assert isolated["pid"] != handler.pid
    # The handler's own line for each task it ended (its database thread, not inside the task) names it too.
    done = [e for e in handler_lines if f"task {ids[2]} (boom" in e["message"]]
    assert done and done[0]["task_id"] == ids[2] and done[0]["task_type"] == "boom"
    assert any(e["message"] == "handler h-one: stopped" for e in handler_lines)

    janitor_lines = parse_lines(processes.output(janitor))
    assert {e["process"] for e in janitor_lines} == {"janitor j-one"}
    assert any(e["message"] == "janitor j-one: deleted 1 expired tasks" for e in janitor_lines)


def test_text_stays_the_default(processes) -> None:
    handler = processes.start("handler.py", WORKER_NAME="h-text")
    wait_for(lambda: "ready for task types" in processes.output(handler))
    handler.send_signal(signal.SIGTERM)
    assert handler.wait(timeout=15) == 0
    lines = processes.output(handler).splitlines()
    assert any(" INFO flask_tasks.handler: handler h-text: ready for task types" in line for line in lines)
    assert not any(line.startswith("{") for line in lines)


def test_warnings_and_uncaught_exceptions_are_json_lines(base_env) -> None:
    script = textwrap.dedent(
        """
        import threading, warnings
        from flask_tasks.startup import start_process

        start_process("janitor")
        warnings.warn("careful")
        thread = threading.Thread(target=lambda: 1 / 0, name="side")
        thread.start()
        thread.join()
        raise RuntimeError("the end")
        """
    )
    env = {**base_env, "LOG_FORMAT": "json", "WORKER_NAME": "w-1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    entries = parse_lines(done.stderr)
    assert {e["process"] for e in entries} == {"janitor w-1"}
    by_logger = {e["logger"]: e for e in entries if e["logger"] != "flask_tasks.db"}
    assert "careful" in by_logger["py.warnings"]["message"] and by_logger["py.warnings"]["level"] == "WARNING"
    uncaught = [e for e in entries if e["level"] == "CRITICAL"]
    assert [e["message"] for e in uncaught] == ["uncaught exception in thread side", "uncaught exception"]
    assert "ZeroDivisionError" in uncaught[0]["exception"] and "RuntimeError: the end" in uncaught[1]["exception"]
