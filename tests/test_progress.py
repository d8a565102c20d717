"""Progress from inside a task: current_task().progress() shows in GET /task/<id>, at most every half second."""

from __future__ import annotations

import time

import pytest

from flask_tasks.execution import progress_report
from tests.conftest import enqueue, query, wait_for


def progress_of(client, task_id: str) -> dict | None:
    return client.get(f"/task/{task_id}").get_json()["progress"]


@pytest.mark.parametrize("task_type", ["progress_steps", "progress_steps_isolated"])
def test_progress_moves_while_the_task_runs_and_stays_at_the_end(client, conn, processes, task_type):
    processes.start("handler.py")
    task_id = enqueue(conn, task_type, {"steps": 8, "pause": 0.25})
    seen = []

    def finished() -> bool:
        task = client.get(f"/task/{task_id}").get_json()
        if task["progress"] is not None and (not seen or seen[-1] != task["progress"]["fraction"]):
            seen.append(task["progress"]["fraction"])
        return task["status"] == "done"

    wait_for(finished, timeout=30, interval=0.05)
    assert len(seen) >= 3, seen  # it moved while it ran, not only at the end
    assert seen == sorted(seen) and 0 < seen[0] < 1
    final = progress_of(client, task_id)
    assert final["fraction"] == 1.0 and final["message"] == "step 8 of 8"  # the last report is kept
    assert abs(final["updated"] - time.time()) < 30


def test_a_task_that_reports_without_pause_is_written_at_most_every_half_second(client, conn, processes):
    # Test instrumentation in the test's own database: log every write of a task's progress.
    query(conn, "CREATE TABLE progress_writes (at timestamptz NOT NULL DEFAULT clock_timestamp(), fraction float8)")
    query(
        conn,
        """CREATE FUNCTION log_progress() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               INSERT INTO progress_writes (fraction) VALUES ((NEW.progress->>'fraction')::float8);
               RETURN NULL;
           END $$""",
    )
    query(
        conn,
        """CREATE TRIGGER progress_writes AFTER UPDATE OF progress ON tasks FOR EACH ROW
           WHEN (NEW.progress IS DISTINCT FROM OLD.progress AND NEW.progress IS NOT NULL)
           EXECUTE FUNCTION log_progress()""",
    )
    processes.start("handler.py")
    task_id = enqueue(conn, "progress_flood", {"seconds": 2.5})
    wait_for(lambda: client.get(f"/task/{task_id}").get_json()["status"] == "done", timeout=30)
    reports = client.get(f"/task/{task_id}").get_json()["result"]
    times = [row[0] for row in query(conn, "SELECT extract(epoch FROM at) FROM progress_writes ORDER BY at")]
    assert reports > 1000  # it did report without pause
    # 2.5 s: one write every 0.5 s at most, plus the last report written with the outcome.
    assert 3 <= len(times) <= 2.5 / 0.5 + 2, times
    gaps = [b - a for a, b in zip(times, times[1:-1], strict=False)]  # the last one goes with the outcome
    assert all(gap >= 0.45 for gap in gaps), gaps


def test_a_bad_fraction_fails_the_task_with_the_reason(client, conn, processes):
    processes.start("handler.py")
    task_id = enqueue(conn, "bad_progress", {"fraction": 1.5})
    task = wait_for(lambda: (t := client.get(f"/task/{task_id}").get_json())["status"] == "failed" and t, timeout=30)
    assert "the fraction must be a number from 0 to 1, not 1.5" in task["error"]["message"]
    assert task["progress"] is None


def test_a_new_task_has_no_progress(client):
    task = client.post("/task", json={"type": "echo", "args": {"required_arg": "hi"}}).get_json()
    assert task["progress"] is None
    assert client.get(f"/task/{task['id']}").get_json()["progress"] is None


@pytest.mark.parametrize("fraction", [-0.1, 1.01, float("nan"), "half", True, None])
def test_progress_report_refuses_what_is_not_a_fraction(fraction):
    with pytest.raises(ValueError, match="from 0 to 1"):
        progress_report(fraction, None)


def test_progress_report_keeps_a_message_short_and_storable():
    report = progress_report(0.5, "x\x00" * 2000)
    assert report["fraction"] == 0.5 and len(report["message"]) == 1000 and "\x00" not in report["message"]
    # A lone surrogate (a file name read with surrogateescape) cannot go in jsonb: it becomes "?".
    assert progress_report(0.5, "file \udcff.txt")["message"] == "file ?.txt"
    with pytest.raises(ValueError, match="message must be a string"):
        progress_report(0.5, 42)  # type: ignore[arg-type]
