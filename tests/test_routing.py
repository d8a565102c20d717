"""Handlers for some task types: HANDLER_TASKS / --tasks and HANDLER_EXCLUDE_TASKS / --exclude-tasks."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from flask_tasks.config import PROJECT_DIR, ConfigError, load_settings
from flask_tasks.handler import served_types
from flask_tasks.registry import Registry
from tests.conftest import wait_for
from tests.rows import finished, insert_task, task_state

# -- which types: the selection itself ----------------------------------------------------


def registry_of(*names: str) -> Registry:
    reg = Registry()
    for name in names:
        reg.task(lambda: None, name=name)
    return reg


def test_no_selection_serves_every_type():
    assert served_types(registry_of("b", "a", "c"), [], []) == ["a", "b", "c"]


def test_only_and_exclude_select_from_the_registry():
    reg = registry_of("add", "mov3d", "prime", "sleep")
    assert served_types(reg, ["prime", "add"], []) == ["add", "prime"]
    assert served_types(reg, [], ["mov3d"]) == ["add", "prime", "sleep"]
    assert served_types(reg, [], ["mov3d", "sleep", "add"]) == ["prime"]


@pytest.mark.parametrize(
    ("only", "exclude", "message"),
    [
        (["add", "nope"], [], "HANDLER_TASKS (--tasks) names unknown task types [nope]; the known types: add, prime"),
        ([], ["x", "y"], "HANDLER_EXCLUDE_TASKS (--exclude-tasks) names unknown task types [x], [y]; "),
        ([], ["add", "prime"], "HANDLER_EXCLUDE_TASKS (--exclude-tasks) excludes every task type"),
    ],
)
def test_bad_selections_are_config_errors(only, exclude, message):
    with pytest.raises(ConfigError) as err:
        served_types(registry_of("add", "prime"), only, exclude)
    assert str(err.value).startswith(message)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("FLASK_TASKS_ENV_FILE", "")
    for name in ("HANDLER_TASKS", "HANDLER_EXCLUDE_TASKS"):
        monkeypatch.setenv(name, "")
    return monkeypatch


def test_settings_read_comma_separated_types(env):
    assert load_settings().handler_tasks == [] and load_settings().handler_exclude_tasks == []
    env.setenv("HANDLER_TASKS", " add, prime ,")
    assert load_settings().handler_tasks == ["add", "prime"]
    env.setenv("HANDLER_TASKS", "")
    env.setenv("HANDLER_EXCLUDE_TASKS", "mov3d")
    assert load_settings().handler_exclude_tasks == ["mov3d"]


def test_both_variables_are_a_config_error(env):
    env.setenv("HANDLER_TASKS", "add")
    env.setenv("HANDLER_EXCLUDE_TASKS", "mov3d")
    with pytest.raises(ConfigError, match="^set HANDLER_TASKS or HANDLER_EXCLUDE_TASKS, not both$"):
        load_settings()


# -- real handler processes ---------------------------------------------------------------


def stays_waiting(conn, task_id: str, seconds: float = 1.0) -> bool:
    """The task is still waiting, never claimed, after `seconds` (20 polls of the handlers under test)."""
    time.sleep(seconds)
    state = task_state(conn, task_id)
    return state["status"] == "waiting" and state["attempts"] == 0 and state["worker"] is None


def test_handlers_for_some_types_share_the_queue(conn, processes):
    add_id = insert_task(conn, "add", {"x": 2, "y": 3})
    prime_id = insert_task(conn, "prime", {"n": 10})
    only_add = processes.start("handler.py", HANDLER_TASKS="add", WORKER_NAME="only-add")

    assert wait_for(lambda: finished(conn, add_id))["result"] == 5
    assert stays_waiting(conn, prime_id), "a handler for add only must leave prime alone"
    log = processes.output(only_add)
    assert "handler only-add: ready for task types add\n" in log
    assert "handler only-add: will NOT run task types " in log
    not_run = log.split("will NOT run task types ")[1].split(":")[0].split(", ")
    assert "prime" in not_run and "mov3d" in not_run and "add" not in not_run

    # The flag replaces the variable: this one has HANDLER_TASKS=add too, and runs all but add.
    all_but_add = processes.start("handler.py", "--exclude-tasks", "add", HANDLER_TASKS="add", WORKER_NAME="not-add")
    prime = wait_for(lambda: finished(conn, prime_id))
    assert prime["status"] == "done" and prime["result"] == 29 and prime["worker"] == "not-add"

    only_add.terminate()
    assert only_add.wait(timeout=10) == 0
    second_add = insert_task(conn, "add", {"x": 1, "y": 1})
    assert stays_waiting(conn, second_add), "a handler excluding add must leave add alone"
    assert all_but_add.poll() is None
    log = processes.output(all_but_add)
    assert "handler not-add: will NOT run task types add:" in log
    ready = log.split("handler not-add: ready for task types ")[1].splitlines()[0].split(", ")
    assert "prime" in ready and "mov3d" in ready and "add" not in ready


def test_the_tasks_flag_replaces_the_variable(conn, processes):
    add_id, prime_id = insert_task(conn, "add", {"x": 20, "y": 22}), insert_task(conn, "prime", {"n": 1})
    processes.start("handler.py", "--tasks", "add", HANDLER_EXCLUDE_TASKS="add")
    assert wait_for(lambda: finished(conn, add_id))["result"] == 42
    assert stays_waiting(conn, prime_id)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            [],
            {"HANDLER_TASKS": "add,nope"},
            "flask-tasks: configuration error: HANDLER_TASKS (--tasks) names unknown task types [nope]; "
            "the known types: add, bad_progress, big_result, ",
        ),
        (
            ["--exclude-tasks", "mov3d,movie"],
            {},
            "flask-tasks: configuration error: HANDLER_EXCLUDE_TASKS (--exclude-tasks) names unknown task types "
            "[movie]; the known types: add, ",
        ),
        (
            [],
            {"HANDLER_TASKS": "add", "HANDLER_EXCLUDE_TASKS": "mov3d"},
            "flask-tasks: configuration error: set HANDLER_TASKS or HANDLER_EXCLUDE_TASKS, not both\n",
        ),
        (["--tasks", " , "], {}, "flask-tasks: configuration error: --tasks ' , ' names no task type\n"),
    ],
)
def test_a_bad_selection_stops_the_handler_with_one_line(processes, args, env, message):
    proc = processes.start("handler.py", *args, **env)
    assert proc.wait(timeout=30) == 2
    output = processes.output(proc)
    assert output.startswith(message)
    assert output.count("\n") == 1, output


def test_both_flags_are_refused(processes):
    proc = processes.start("handler.py", "--tasks", "add", "--exclude-tasks", "mov3d")
    assert proc.wait(timeout=30) == 2
    assert "argument --exclude-tasks: not allowed with argument --tasks" in processes.output(proc)


def test_help_names_the_flags_and_needs_no_settings():
    # A bad setting would stop any process that reads them: --help must not.
    env = {"PATH": "/usr/bin:/bin", "FLASK_TASKS_ENV_FILE": "", "MAX_TASK_TIME": "soon"}
    done = subprocess.run(
        [sys.executable, "handler.py", "--help"], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "--tasks TYPES" in done.stdout and "--exclude-tasks TYPES" in done.stdout
