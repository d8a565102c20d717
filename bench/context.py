"""What every measurement is given: the sizes, the PostgreSQL server, a folder for logs, and notes for the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.pg import Server

# A figure of one run: a number, or None when it could not be measured (the notes say why).
Figures = dict[str, float | None]


@dataclass(frozen=True)
class Sizes:
    drain_tasks: int  # (a) tasks drained per handler count
    handler_counts: tuple[int, ...]  # (a) handler (and PGQueuer worker) counts
    http_bulk_requests: int  # (b), (c) timed calls or requests of 1,000 tasks, per connection or client thread
    wrk_seconds: int  # (d) length of each wrk run
    latency_samples: int  # (e) one task every 20 ms
    janitor_rows: int  # (f) expired rows for the janitor
    janitor_drain_tasks: int  # (f) tasks drained by 2 handlers with and without the janitor
    bloat_tasks: int  # (g) tasks flowing through at bloat_rate
    bloat_live_rows: int  # (g) the live-row baseline
    repeats: int  # (a), (b), (c): each of their figures in a run is the median of this many measurements
    metrics_tasks: int = 1_000_000  # (m) tasks stored while /metrics is scraped
    listing_tasks: int = 1_000_000  # (l) tasks stored while GET /task is asked
    listing_samples: int = 300  # (l) timed requests of each listing
    drain_tasks_large: int = 100_000  # (a) tasks of the larger drain: 2 handlers against 2 PGQueuer workers
    celery_tasks: int = 20_000  # (y) tasks of each drain: 2 Celery worker processes against 2 handlers

    BATCH_SIZE = 100  # PGQueuer's batch_size everywhere; flask-tasks' handlers run with their defaults
    HTTP_BATCH = 1000  # (c) tasks per request
    BLOAT_RATE = 10_000  # (g) tasks inserted per second


FULL = Sizes(
    drain_tasks=30_000,
    handler_counts=(1, 2, 4),
    http_bulk_requests=15,
    wrk_seconds=10,
    latency_samples=200,
    janitor_rows=500_000,
    janitor_drain_tasks=20_000,
    bloat_tasks=1_000_000,
    bloat_live_rows=10_000,
    repeats=3,
)

QUICK = Sizes(
    drain_tasks=2_000,
    handler_counts=(1, 2, 4),
    http_bulk_requests=2,
    wrk_seconds=2,
    latency_samples=20,
    janitor_rows=20_000,
    janitor_drain_tasks=2_000,
    bloat_tasks=20_000,
    bloat_live_rows=10_000,
    repeats=1,
    metrics_tasks=20_000,
    listing_tasks=20_000,
    listing_samples=30,
    drain_tasks_large=5_000,
    celery_tasks=2_000,
)


@dataclass
class Bench:
    sizes: Sizes
    server: Server
    logdir: Path
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """A remark for the report (e.g. why a figure is missing); printed at once too."""
        print(f"  note: {text}", flush=True)
        if text not in self.notes:
            self.notes.append(text)
