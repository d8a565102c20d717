"""End to end: the Procfile under honcho, driven over HTTP as a user would."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import wait_for
from tests.pgbouncer import SETTINGS as PGBOUNCER_SETTINGS
from tests.pgbouncer import running_pgbouncer

VENV_BIN = os.path.dirname(sys.executable)  # where honcho, gunicorn and python live


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: object = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def reachable(url: str) -> bool:
    try:
        return http("GET", url)[0] == 200
    except OSError:
        return False


def stop_honcho(honcho) -> None:
    honcho.send_signal(signal.SIGINT)
    honcho.wait(timeout=15)


def honcho_command(tmp_path: Path, *args: str) -> list[str]:
    """honcho with an empty env file, so a developer's .env cannot change the test."""
    empty = tmp_path / "empty.env"
    empty.touch()
    return [f"{VENV_BIN}/honcho", "start", "-e", str(empty), *args]


@pytest.mark.parametrize("through", ["direct", "pgbouncer"])
def test_procfile_under_honcho(through, processes, server_url, database_url, tmp_path: Path):
    if through == "pgbouncer":  # PgBouncer in transaction mode, stock config, with the README's settings
        with running_pgbouncer(server_url) as bouncer:
            env = {"DATABASE_URL": bouncer.url(database_url), **PGBOUNCER_SETTINGS}
            run_procfile_under_honcho(processes, tmp_path, env)
            assert "login attempt" in bouncer.output()  # the processes did connect through it
    else:
        run_procfile_under_honcho(processes, tmp_path, {})


def run_procfile_under_honcho(processes, tmp_path: Path, env: dict[str, str]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    honcho = processes.start(
        *honcho_command(tmp_path, "-p", str(port), "-c", "handler=2"),
        PATH=f"{VENV_BIN}:{os.environ['PATH']}", MAX_TASK_TIME="4", JANITOR_INTERVAL="0.5", **env,
    )  # fmt: skip
    wait_for(lambda: reachable(f"{base}/tasks"), timeout=30)

    # gunicorn answers without its version, and with the security headers.
    with urllib.request.urlopen(f"{base}/tasks") as response:
        assert response.headers.get("Server", "") == "gunicorn"
        assert response.headers["X-Content-Type-Options"] == "nosniff"

    status, created = http("POST", f"{base}/task/new", {"type": "add", "args": {"x": 1, "y": 2}})
    assert status == 201 and created["status"] == "waiting"
    status, legacy = http("POST", f"{base}/task/new", {"required_arg": "test"})
    assert status == 201 and legacy["required_arg"] == "test"
    status, error = http("POST", f"{base}/task", {"type": "add", "args": {"x": "1", "y": 2}})
    assert (status, error) == (400, {"message": "the passed param [x] doesnt match the required type: [int]."})

    done = wait_for(lambda: (r := http("GET", f"{base}/task/{created['id']}")[1])["status"] == "done" and r)
    assert done["result"] == 3
    view = wait_for(lambda: (r := http("GET", f"{base}/task/{legacy['id']}/view")[1])["status"] == "done" and r)
    assert view["result"] == {"required_arg": "test", "length": 4} and view["required_arg"] == "test"

    # After MAX_TASK_TIME the janitor deletes it.
    status, gone = wait_for(lambda: (r := http("GET", f"{base}/task/{created['id']}"))[0] == 404 and r, timeout=15)
    assert "may have expired" in gone["message"]

    stop_honcho(honcho)
    log = processes.output(honcho)
    for name in ("web.1", "handler.1", "handler.2", "janitor.1"):
        assert f"{name} started" in log
    assert log.count("using PostgreSQL at") == 4  # web, two handlers, janitor
    assert "deleted 2 expired tasks" in log or "deleted 1 expired tasks" in log
    assert "Traceback" not in log


def test_embedded_database_is_the_default_and_survives_a_restart(processes, tmp_path: Path):
    pgdata = tmp_path / "pgdata"
    env = {"PATH": f"{VENV_BIN}:{os.environ['PATH']}", "EMBEDDED_PG_DIR": str(pgdata)}
    processes.env.pop("DATABASE_URL")
    honcho = processes.start(*honcho_command(tmp_path, "handler", "janitor"), **env)
    wait_for(lambda: processes.output(honcho).count("using the embedded PostgreSQL") == 2, timeout=60)
    assert "postgres:" not in processes.output(honcho).split("using the embedded")[1].split("\n")[0]

    url = f"postgresql://postgres@/postgres?host={pgdata}"

    def task_done() -> bool:
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT status FROM tasks WHERE type = 'add'")
            return cur.fetchone()[0] == "done"

    def schema_ready() -> bool:  # each process logs the database it uses, then migrates it
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('tasks') IS NOT NULL")
            return cur.fetchone()[0]

    wait_for(schema_ready, timeout=30)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO tasks (type, args, expire) VALUES ('add', '{"x": 2, "y": 3}', now() + '1h')""")
    wait_for(task_done, timeout=30)
    stop_honcho(honcho)
    wait_for(lambda: not (pgdata / "postmaster.pid").exists(), timeout=15)  # the last process stopped it

    honcho = processes.start(*honcho_command(tmp_path, "janitor"), **env)
    wait_for(lambda: "using the embedded PostgreSQL" in processes.output(honcho), timeout=60)
    assert task_done()  # the data survived the restart
    stop_honcho(honcho)
