"""The queue as Prometheus metrics (GET /metrics): read from the database through flask_tasks.stats, at each scrape.

Nothing is counted in a web worker's memory: the counters live in task_stats, written by the processes
that do the work, so they survive any restart of the web (and of a handler), and every web worker
answers the same numbers. A scrape reads small tables only: task_counts (recounted by the janitor every
STATS_INTERVAL), task_stats and workers; never the tasks table itself, unless the counts are three
intervals old (no janitor runs) and this scrape is the one to recount them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2.extensions
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from flask_tasks import db, stats, workers
from flask_tasks.config import Settings
from flask_tasks.registry import Registry
from flask_tasks.shape import STATUSES

PREFIX = "flask_tasks"
KINDS = ("handler", "janitor")


def families(
    counts: dict[str, Any],
    totals: dict[str, dict[str, Any]],
    alive: list[dict[str, Any]],
    types: list[str],
    now: float,
) -> list[Metric]:
    """The metric families from what stats and workers read. `types` are this server's task types:
    each gets its series even with no task yet, so a query or an alert on it never finds nothing."""
    every_type = sorted(set(types) | set(counts["types"]) | set(totals))

    tasks = GaugeMetricFamily(
        f"{PREFIX}_tasks",
        "Tasks stored, by status and type, as last counted (see flask_tasks_counts_age_seconds).",
        labels=["status", "type"],
    )
    for task_type in every_type:
        by_status = counts["types"].get(task_type, {})
        for status in STATUSES:
            tasks.add_metric([status, task_type], by_status.get(status, 0))

    oldest = GaugeMetricFamily(
        f"{PREFIX}_oldest_waiting_seconds",
        "How long the oldest task waiting and due has waited (0: none waits), from the last count.",
        value=counts["oldest_waiting_seconds"] or 0.0,
    )
    taken = counts["taken"]
    age = GaugeMetricFamily(
        f"{PREFIX}_counts_age_seconds",
        "Seconds since the tasks were last counted (by a janitor every STATS_INTERVAL, or by a scrape).",
        value=max(0.0, now - taken) if taken is not None else float("nan"),
    )

    done, failed, retried = (
        CounterMetricFamily(f"{PREFIX}_tasks_{name}", text, labels=["type"])
        for name, text in (
            ("done", "Tasks done, by type, since the database was made."),
            ("failed", "Tasks failed for good (out of attempts, or not to be retried), by type."),
            ("retried", "Attempts that failed and were tried again, by type."),
        )
    )
    duration = HistogramMetricFamily(
        f"{PREFIX}_task_duration_seconds",
        "How long attempts ran (done, failed or retried), by type.",
        labels=["type"],
    )
    bounds = [floatToGoString(bound) for bound in stats.DURATION_BUCKETS] + ["+Inf"]
    for task_type in every_type:
        total = totals.get(task_type)
        if total is None:
            total = {"done": 0, "failed": 0, "retried": 0, "seconds_sum": 0.0, "seconds_buckets": []}
        done.add_metric([task_type], total["done"])
        failed.add_metric([task_type], total["failed"])
        retried.add_metric([task_type], total["retried"])
        # task_stats keeps one count per bound; Prometheus wants each bucket to hold all those below it.
        per_bound = list(total["seconds_buckets"]) + [0] * (len(bounds) - len(total["seconds_buckets"]))
        cumulative, running = [], 0
        for bound, n in zip(bounds, per_bound[: len(bounds)], strict=True):
            running += n
            cumulative.append((bound, running))
        duration.add_metric([task_type], cumulative, total["seconds_sum"])

    kinds = GaugeMetricFamily(f"{PREFIX}_workers_alive", "Handler and janitor processes alive.", labels=["kind"])
    serving = GaugeMetricFamily(
        f"{PREFIX}_handlers_serving",
        "Live handlers that claim each task type (0: its tasks wait for nobody).",
        labels=["type"],
    )
    for kind in KINDS:
        kinds.add_metric([kind], sum(1 for worker in alive if worker["kind"] == kind))
    for task_type in every_type:
        n = sum(1 for w in alive if w["kind"] == "handler" and task_type in (w["task_types"] or ()))
        serving.add_metric([task_type], n)

    return [tasks, oldest, age, done, failed, retried, duration, kinds, serving]


class QueueCollector:
    """A prometheus_client collector that reads the database when the registry collects it."""

    def __init__(self, conn: psycopg2.extensions.connection, settings: Settings, registry: Registry) -> None:
        self.conn, self.settings, self.registry = conn, settings, registry

    def collect(self) -> Iterator[Metric]:
        conn = self.conn
        # The janitors count every STATS_INTERVAL; three intervals without a count means none runs, and then
        # this scrape counts (at most one process at a time does: the others read the previous count).
        stats.refresh_counts(conn, 3 * self.settings.stats_interval)
        counts = stats.counts(conn)
        totals = stats.totals(conn)
        alive = workers.list_workers(conn, self.settings.lease_seconds)
        now = db.run(conn, "database_now")[0][0]  # the database's clock: counts_age compares with its times
        yield from families(counts, totals, alive, self.registry.names(), now)


class _Fixed:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def _exposition(collector: QueueCollector | _Fixed) -> bytes:
    # A fresh CollectorRegistry each time: the collector holds this request's connection, and no state
    # outlives the request. Without describe(), register() does not collect: the database is read once.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


def scrape(conn: psycopg2.extensions.connection, settings: Settings, registry: Registry) -> bytes:
    """Every metric in the text exposition format (as CONTENT_TYPE_LATEST names it), read from the database now."""
    return _exposition(QueueCollector(conn, settings, registry))


def exposition(metrics: list[Metric]) -> bytes:
    """These metric families in the text exposition format (the API document's example; tests)."""
    return _exposition(_Fixed(metrics))
