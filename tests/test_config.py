"""Settings from the environment: defaults, accepted values, and errors that name the bad variable."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flask_tasks.config import PROJECT_DIR, ConfigError, load_settings

VARIABLES = [
    "DATABASE_URL",
    "EMBEDDED_PG_DIR",
    "MAX_TASK_TIME",
    "FRONTEND_URL",
    "PORT",
    "GUNICORN_WORKERS",
    "GUNICORN_THREADS",
    "GROUP_COMMIT",
    "MAX_CONTENT_LENGTH",
    "WORKER_NAME",
    "POLL_INTERVAL",
    "LEASE_SECONDS",
    "BATCH_SIZE",
    "MAX_ATTEMPTS",
    "SHUTDOWN_GRACE",
    "JANITOR_INTERVAL",
    "JANITOR_BATCH",
    "TASKS_MODULE",
    "DEFAULT_TASK_TYPE",
    "LOG_LEVEL",
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting in the environment and no .env file; every variable is restored afterwards."""
    for name in VARIABLES:
        # setenv first so that monkeypatch remembers the original (even "unset") and restores it,
        # also when a .env file loaded by a test sets the variable behind monkeypatch's back.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("FLASK_TASKS_ENV_FILE", "")
    return monkeypatch


def test_defaults(env):
    s = load_settings()
    assert s.database_url is None
    assert s.embedded_dir == PROJECT_DIR / ".pgdata"
    assert s.max_task_time == 3600
    assert s.frontend_url == ["*"]
    assert s.port == 5000
    assert s.gunicorn_workers == 2
    assert s.gunicorn_threads == 8 and not s.group_commit
    assert s.max_content_length == 1024 * 1024
    assert s.worker_name == f"{socket.gethostname()}-{os.getpid()}"
    assert s.poll_interval == 0.5
    assert s.lease_seconds == 30.0
    assert s.batch_size == 1000
    assert s.max_attempts == 3
    assert s.shutdown_grace == 3.0
    assert s.janitor_interval == 10.0
    assert s.janitor_batch == 1000
    assert s.tasks_module == "tasks"
    assert s.default_task_type == "echo"
    assert s.log_level == "INFO"


def test_empty_values_mean_the_default(env):
    for name in VARIABLES:
        if name != "LOG_LEVEL":  # see test_empty_log_level_means_the_default
            env.setenv(name, "")
    s = load_settings()
    assert s.database_url is None
    assert s.embedded_dir == PROJECT_DIR / ".pgdata"
    assert s.max_task_time == 3600
    assert s.port == 5000
    assert s.poll_interval == 0.5
    assert s.frontend_url == ["*"]
    assert s.tasks_module == "tasks"
    assert s.default_task_type == "echo"


def test_empty_log_level_means_the_default(env):
    # `LOG_LEVEL=` in a .env file, like every other empty setting, should mean the default.
    env.setenv("LOG_LEVEL", "")
    assert load_settings().log_level == "INFO"


@pytest.mark.parametrize(
    "url", ["postgres://user:secret@db.example.com:5432/tasks", "postgresql://postgres@127.0.0.1:5432/flask_tasks"]
)
def test_database_url_schemes(env, url):
    env.setenv("DATABASE_URL", url)
    assert load_settings().database_url == url


def test_values_are_read(env, tmp_path):
    values = {
        "EMBEDDED_PG_DIR": str(tmp_path / "pg"),
        "MAX_TASK_TIME": "60",
        "FRONTEND_URL": "https://a.example.com, https://b.example.com,",
        "PORT": " 8080 ",
        "GUNICORN_THREADS": "4",
        "GROUP_COMMIT": "true",
        "MAX_CONTENT_LENGTH": "2048",
        "WORKER_NAME": "handler-1",
        "POLL_INTERVAL": "0.05",
        "LEASE_SECONDS": "5",
        "TASKS_MODULE": "tests.sidefx_tasks",
        "DEFAULT_TASK_TYPE": "add",
        "LOG_LEVEL": "debug",
    }
    for name, value in values.items():
        env.setenv(name, value)
    s = load_settings()
    assert s.embedded_dir == tmp_path / "pg"
    assert s.max_task_time == 60
    assert s.frontend_url == ["https://a.example.com", "https://b.example.com"]
    assert s.port == 8080
    assert s.gunicorn_threads == 4 and s.group_commit
    assert s.max_content_length == 2048
    assert s.worker_name == "handler-1"
    assert s.poll_interval == 0.05
    assert s.lease_seconds == 5.0
    assert s.tasks_module == "tests.sidefx_tasks"
    assert s.default_task_type == "add"
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_TASK_TIME", "abc"),
        ("MAX_TASK_TIME", "0"),
        ("MAX_TASK_TIME", "1.5"),
        ("PORT", "0"),
        ("PORT", "-80"),
        ("POLL_INTERVAL", "-1"),
        ("POLL_INTERVAL", "fast"),
        ("LEASE_SECONDS", "0.5"),
        ("GUNICORN_WORKERS", "0"),
        ("MAX_CONTENT_LENGTH", "1MB"),
        ("MAX_ATTEMPTS", "0"),
        ("SHUTDOWN_GRACE", "-1"),
        ("LOG_LEVEL", "loud"),
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "sqlite:///tasks.db"),
    ],
)
def test_bad_value_raises_config_error_naming_the_variable(env, name, value):
    env.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert name in str(err.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POLL_INTERVAL", "nan"),
        ("POLL_INTERVAL", "inf"),
        ("LEASE_SECONDS", "nan"),
        ("JANITOR_INTERVAL", "nan"),
        ("PORT", "65536"),
    ],
)
def test_unusable_number_raises_config_error(env, name, value):
    # nan passes `value < minimum` (every comparison with nan is false); an infinite pause never ends;
    # a port above 65535 cannot be bound.
    env.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert name in str(err.value)


def test_env_file_fills_in_unset_variables_only(env, tmp_path: Path):
    env_file = tmp_path / "test.env"
    env_file.write_text("MAX_TASK_TIME=42\nPORT=6000\n")
    env.setenv("FLASK_TASKS_ENV_FILE", str(env_file))
    env.setenv("PORT", "7000")
    s = load_settings()
    assert s.max_task_time == 42
    assert s.port == 7000  # the environment wins over the file


def test_empty_env_file_setting_ignores_dot_env(env):
    env.setenv("FLASK_TASKS_ENV_FILE", "")
    load_settings()
    assert "MAX_TASK_TIME" not in os.environ


def test_janitor_exits_with_one_line_on_a_bad_setting():
    environ = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    environ.update(FLASK_TASKS_ENV_FILE="", MAX_TASK_TIME="abc")
    proc = subprocess.run(
        [sys.executable, "janitor.py"], cwd=PROJECT_DIR, env=environ, capture_output=True, text=True, timeout=10
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) == 1, lines
    assert "MAX_TASK_TIME" in lines[0]
