"""GET /metrics: Prometheus metrics read from the database, against real handler, janitor and web processes."""

from __future__ import annotations

import base64
import signal
import urllib.request

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from flask_tasks import db, metrics
from flask_tasks.shape import STATUSES
from flask_tasks.workers import DURATION_BUCKETS
from tests.conftest import enqueue, query, wait_for
from tests.helpers import app_with, free_port, http, start_web

# Heartbeats (which carry the counters) every second, counts every half second.
FAST = {"LEASE_SECONDS": "3", "STATS_INTERVAL": "0.5", "JANITOR_INTERVAL": "0.2"}


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of an exposition text."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def scrape(base: str, **headers: str) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(f"{base}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_families_make_cumulative_buckets_and_a_series_for_every_type() -> None:
    n = len(DURATION_BUCKETS)
    per_bound = [0] * (n + 1)
    per_bound[0], per_bound[3], per_bound[n] = 2, 5, 1  # two very fast, five middling, one past the last bound
    counts = {
        "taken": 100.0,
        "statuses": {},
        "types": {"add": {"waiting": 4, "running": 1, "done": 7, "failed": 0, "cancelled": 0}},
        "oldest_waiting_seconds": 12.5,
    }
    totals = {"add": {"done": 7, "failed": 1, "retried": 2, "seconds_sum": 3.25, "seconds_buckets": per_bound}}
    alive = [
        {"kind": "handler", "task_types": ["add"]},
        {"kind": "handler", "task_types": ["add", "sleep"]},
        {"kind": "janitor", "task_types": []},
    ]
    samples = parse(metrics.exposition(metrics.families(counts, totals, alive, ["add", "sleep"], now=104.0)).decode())
    assert value(samples, "flask_tasks_tasks", status="waiting", type="add") == 4
    assert {labels for labels in samples["flask_tasks_tasks"]} == {
        (("status", s), ("type", t)) for s in STATUSES for t in ("add", "sleep")
    }
    assert value(samples, "flask_tasks_tasks", status="waiting", type="sleep") == 0
    assert value(samples, "flask_tasks_oldest_waiting_seconds") == 12.5
    assert value(samples, "flask_tasks_counts_age_seconds") == 4.0
    assert value(samples, "flask_tasks_tasks_done_total", type="add") == 7
    assert value(samples, "flask_tasks_tasks_failed_total", type="add") == 1
    assert value(samples, "flask_tasks_tasks_retried_total", type="add") == 2
    assert value(samples, "flask_tasks_tasks_done_total", type="sleep") == 0
    buckets = samples["flask_tasks_task_duration_seconds_bucket"]
    by_bound = {dict(labels)["le"]: v for labels, v in buckets.items() if ("type", "add") in labels}
    assert by_bound[str(DURATION_BUCKETS[0])] == 2
    assert by_bound[str(DURATION_BUCKETS[2])] == 2
    assert by_bound[str(DURATION_BUCKETS[3])] == 7
    assert by_bound[str(float(DURATION_BUCKETS[-1]))] == 7
    assert by_bound["+Inf"] == 8
    assert value(samples, "flask_tasks_task_duration_seconds_count", type="add") == 8
    assert value(samples, "flask_tasks_task_duration_seconds_sum", type="add") == 3.25
    assert value(samples, "flask_tasks_workers_alive", kind="handler") == 2
    assert value(samples, "flask_tasks_workers_alive", kind="janitor") == 1
    assert value(samples, "flask_tasks_handlers_serving", type="add") == 2
    assert value(samples, "flask_tasks_handlers_serving", type="sleep") == 1


def finished(base: str, ids: list[str]) -> bool:
    return all(http("GET", f"{base}/task/{i}")[1]["status"] in ("done", "failed", "cancelled") for i in ids)


def test_metrics_of_a_running_system_survive_restarts(processes, base_env, conn) -> None:
    env = {**FAST, "HANDLER_EXCLUDE_TASKS": "divide"}  # divide tasks wait: nobody serves them
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = start_web(processes, port, env)
    handler = processes.start("handler.py", WORKER_NAME="h-first", **env)
    processes.start("janitor.py", WORKER_NAME="j", **env)
    waiting = http("POST", f"{base}/task", {"type": "divide", "args": {"x": 2, "y": 3}})[1]["id"]
    ids = [http("POST", f"{base}/task", {"type": "add", "args": {"x": i, "y": 1}})[1]["id"] for i in range(5)]
    ids.append(http("POST", f"{base}/task", {"type": "boom", "args": {}})[1]["id"])
    ids.append(http("POST", f"{base}/task", {"type": "flaky", "args": {"key": "k", "failures": 1}})[1]["id"])
    wait_for(lambda: finished(base, ids))

    status, text, headers = scrape(base)
    assert status == 200 and headers["Content-Type"] == CONTENT_TYPE_LATEST
    samples = wait_for(
        lambda: (
            (s := parse(scrape(base)[1]))
            and value(s, "flask_tasks_tasks_done_total", type="add") == 5
            and value(s, "flask_tasks_tasks", status="done", type="add") == 5
            and value(s, "flask_tasks_tasks_done_total", type="flaky") == 1
            and s
        ),
        timeout=20,
    )
    assert value(samples, "flask_tasks_tasks_failed_total", type="boom") == 1
    assert value(samples, "flask_tasks_tasks_retried_total", type="flaky") == 1
    assert value(samples, "flask_tasks_tasks_failed_total", type="add") == 0
    assert value(samples, "flask_tasks_tasks", status="failed", type="boom") == 1
    assert value(samples, "flask_tasks_tasks", status="waiting", type="divide") == 1
    assert value(samples, "flask_tasks_oldest_waiting_seconds") > 0
    assert 0 <= value(samples, "flask_tasks_counts_age_seconds") < 5
    assert value(samples, "flask_tasks_task_duration_seconds_count", type="add") == 5
    assert value(samples, "flask_tasks_task_duration_seconds_count", type="flaky") == 2  # both attempts ran
    assert value(samples, "flask_tasks_task_duration_seconds_bucket", type="add", le="+Inf") == 5
    assert value(samples, "flask_tasks_workers_alive", kind="handler") == 1
    assert value(samples, "flask_tasks_workers_alive", kind="janitor") == 1
    assert value(samples, "flask_tasks_handlers_serving", type="add") == 1
    assert value(samples, "flask_tasks_handlers_serving", type="divide") == 0
    assert http("GET", f"{base}/task/{waiting}")[1]["status"] == "waiting"

    # A new handler and a new web: the counters go on from where they were.
    handler.send_signal(signal.SIGTERM)
    assert handler.wait(timeout=15) == 0
    web.send_signal(signal.SIGTERM)
    assert web.wait(timeout=15) == 0
    web = start_web(processes, port, env)
    processes.start("handler.py", WORKER_NAME="h-second", **env)
    more = [http("POST", f"{base}/task", {"type": "add", "args": {"x": i, "y": 2}})[1]["id"] for i in range(3)]
    wait_for(lambda: finished(base, more))
    samples = wait_for(
        lambda: (s := parse(scrape(base)[1])) and value(s, "flask_tasks_tasks_done_total", type="add") == 8 and s,
        timeout=20,
    )
    assert value(samples, "flask_tasks_tasks_failed_total", type="boom") == 1
    assert value(samples, "flask_tasks_task_duration_seconds_count", type="add") == 8
    # The first handler is gone: the janitor folded its counters into the totals of processes gone.
    assert query(conn, "SELECT count(*) FROM workers WHERE name = 'h-first' AND stopped IS NOT NULL") == [(1,)]
    assert value(samples, "flask_tasks_workers_alive", kind="handler") == 1


def test_a_scrape_reads_no_task_while_the_counts_are_fresh(database_url, settings, registry, conn) -> None:
    for i in range(20):
        enqueue(conn, "add", {"x": i, "y": 1})

    def scrape_in_transaction(commit: bool) -> tuple[dict, tuple[int, int]]:
        """The samples of one scrape, and the (sequential, index) scans of tasks it made. A new connection
        each time: a backend's pg_stat_xact_ views also show what its earlier transactions did."""
        scraper = db.connect(database_url, "metrics test")
        scraper.autocommit = False
        try:
            text = metrics.scrape(scraper, settings, registry).decode()
            read = "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables WHERE relname = 'tasks'"
            scans = query(scraper, read)[0]
            scraper.commit() if commit else scraper.rollback()
            return parse(text), scans
        finally:
            scraper.close()

    samples, scans = scrape_in_transaction(commit=True)
    assert scans[0] == 1  # never counted: this scrape counts, once
    assert value(samples, "flask_tasks_tasks", status="waiting", type="add") == 20
    samples, scans = scrape_in_transaction(commit=False)
    assert scans == (0, 0)  # counted a moment ago: the next scrape reads task_counts only
    assert value(samples, "flask_tasks_tasks", status="waiting", type="add") == 20


def test_access_and_parameters(base_env, registry, monkeypatch) -> None:
    app = app_with(monkeypatch, {**base_env, "OPERATOR_PASSWORD": "s3cret"}, registry)
    client = app.test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert 'Basic realm="flask-tasks"' in refused.headers.getlist("WWW-Authenticate")  # a browser asks
    good = base64.b64encode(b"prometheus:s3cret").decode()
    bad = base64.b64encode(b"prometheus:wrong").decode()
    assert client.get("/metrics", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    answer = client.get("/metrics", headers={"Authorization": f"Basic {good}"})
    assert answer.status_code == 200 and answer.content_type == CONTENT_TYPE_LATEST
    assert "flask_tasks_workers_alive" in answer.text
    answer = client.get("/metrics?name[]=x", headers={"Authorization": f"Basic {good}"})
    assert answer.status_code == 400 and "name[]" in answer.json["message"]


def test_loopback_without_configuration_but_not_through_a_proxy(client) -> None:
    assert client.get("/metrics").status_code == 200  # the test client's remote address is 127.0.0.1
    assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code in (401, 403)
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code in (401, 403)


def test_database_down_is_a_503(base_env, registry, monkeypatch) -> None:
    env = {**base_env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    client = app_with(monkeypatch, env, registry).test_client()
    answer = client.get("/metrics")
    assert answer.status_code == 503, answer.text
