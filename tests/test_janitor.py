"""Janitors: expired rows go, unexpired and running rows stay, several janitors never conflict."""

from __future__ import annotations

import dataclasses
import signal

from flask_tasks.janitor import Janitor
from tests.conftest import query, wait_for


def insert(conn, status: str, expired: bool, n: int = 1, lease_ok: bool = True) -> None:
    query(
        conn,
        """INSERT INTO tasks (type, status, expire, lease_until)
           SELECT 'add', %(status)s,
                  now() + CASE WHEN %(expired)s THEN interval '-1 minute' ELSE interval '1 hour' END,
                  CASE WHEN %(status)s = 'running'
                       THEN now() + CASE WHEN %(lease_ok)s THEN interval '1 hour' ELSE interval '-1 second' END
                  END
           FROM generate_series(1, %(n)s)""",
        {"status": status, "expired": expired, "n": n, "lease_ok": lease_ok},
    )


def by_status(conn) -> dict[tuple[str, bool], int]:
    rows = query(conn, "SELECT status, expire < now(), count(*) FROM tasks GROUP BY 1, 2")
    return {(status, expired): n for status, expired, n in rows}


def test_expired_finished_rows_go_and_the_rest_stay(conn, settings):
    for status in ("waiting", "done", "failed", "cancelled"):
        insert(conn, status, expired=True, n=3)
        insert(conn, status, expired=False, n=2)
    insert(conn, "running", expired=True, n=2)

    janitor = Janitor(settings)
    assert janitor.clean_once(conn) == 9
    # A task that never ran is never deleted, even past its expiry: it has not been delivered.
    assert by_status(conn) == {
        ("waiting", True): 3,
        ("waiting", False): 2,
        ("done", False): 2,
        ("failed", False): 2,
        ("cancelled", False): 2,
        ("running", True): 2,
    }


def test_deletes_in_batches_until_a_short_batch(conn, settings):
    insert(conn, "done", expired=True, n=2500)
    janitor = Janitor(dataclasses.replace(settings, janitor_batch=1000))
    assert janitor.clean_once(conn) == 2500
    assert by_status(conn) == {}


def test_lost_running_tasks_are_rescued(conn, settings):
    insert(conn, "running", expired=False, n=1, lease_ok=False)
    insert(conn, "running", expired=True, n=1, lease_ok=False)
    query(conn, "UPDATE tasks SET attempts = 1")
    # The lapsed leases put both back to waiting, their expiry pushed out, and nothing is deleted.
    assert Janitor(settings).clean_once(conn) == 0
    assert by_status(conn) == {("waiting", False): 2}


def test_deleted_task_answers_404_saying_it_may_have_expired(conn, client, settings):
    task_id = client.post("/task/new", json={"type": "add", "args": {"x": 1, "y": 2}}).json["id"]
    query(conn, "UPDATE tasks SET status = 'done', expire = now() - interval '1 second'")
    Janitor(settings).clean_once(conn)
    response = client.get(f"/task/{task_id}")
    assert response.status_code == 404
    assert "may have expired" in response.json["message"]


def test_two_janitor_processes_at_once(conn, processes):
    insert(conn, "done", expired=True, n=20000)
    insert(conn, "done", expired=False, n=10)
    janitors = [processes.start("janitor.py", JANITOR_INTERVAL="0.1", JANITOR_BATCH="500") for _ in range(2)]
    wait_for(lambda: by_status(conn) == {("done", False): 10}, timeout=30)
    for janitor in janitors:
        janitor.send_signal(signal.SIGTERM)
    for janitor in janitors:
        assert janitor.wait(timeout=5) == 0
        log = processes.output(janitor)
        assert "WARNING" not in log and "ERROR" not in log
    deleted = [
        sum(
            int(line.split("deleted ")[1].split()[0]) for line in processes.output(j).splitlines() if "deleted " in line
        )
        for j in janitors
    ]
    assert sum(deleted) == 20000
