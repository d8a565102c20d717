"""PGQueuer 1.6.0, the reference: its schema, its bulk enqueue, its worker processes, its finished jobs.

PGQueuer records a finished job by deleting it from the `pgqueuer` table and
inserting a row with status 'successful' into `pgqueuer_log`, in one statement
(`Queries.log_jobs`), so the count of those log rows is its count of done jobs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from pgqueuer import AsyncpgDriver, Queries

from bench.context import Sizes
from bench.pg import Connection, scalar
from bench.pgq_worker import READY
from bench.procs import PYTHON, Process, Processes, server_env

T = TypeVar("T")


def with_queries(url: str, work: Callable[[Queries], Awaitable[T]]) -> T:
    """Run `work` with PGQueuer's Queries on a new asyncpg connection."""

    async def run() -> T:
        conn = await asyncpg.connect(url)
        try:
            return await work(Queries(AsyncpgDriver(conn)))
        finally:
            await conn.close()

    return asyncio.run(run())


def install(url: str) -> None:
    """PGQueuer's tables, types and trigger (what `pgq install` does)."""
    with_queries(url, lambda queries: queries.install())


def enqueue_noop(url: str, count: int) -> tuple[float, float]:
    """`count` "noop" jobs in one bulk enqueue; returns (time.monotonic() at its commit, seconds it took)."""

    async def enqueue(queries: Queries) -> tuple[float, float]:
        started = time.monotonic()
        await queries.enqueue(["noop"] * count, [None] * count, [0] * count)
        committed = time.monotonic()
        return committed, committed - started

    return with_queries(url, enqueue)


def enqueue_noop_batches(url: str, connections: int, batches: int, batch: int, warm_up: int = 0) -> float:
    """`connections` connections at once, each enqueueing `batches` calls of `batch` "noop" jobs in a row;
    the seconds from the first call to the last commit, after `warm_up` untimed calls on each connection."""

    async def client(conn: asyncpg.Connection, calls: int) -> None:
        queries = Queries(AsyncpgDriver(conn))
        for _ in range(calls):
            await queries.enqueue(["noop"] * batch, [None] * batch, [0] * batch)

    async def run() -> float:
        conns = [await asyncpg.connect(url) for _ in range(connections)]
        try:
            await asyncio.gather(*(client(conn, warm_up) for conn in conns))
            started = time.monotonic()
            await asyncio.gather(*(client(conn, batches) for conn in conns))
            return time.monotonic() - started
        finally:
            for conn in conns:
                await conn.close()

    return asyncio.run(run())


def start_workers(procs: Processes, database_url: str, count: int) -> list[Process]:
    """`count` worker processes (batch_size=100), each waited for until its listener works."""
    env = server_env(database_url, BATCH_SIZE=str(Sizes.BATCH_SIZE))
    workers = [procs.start("pgqueuer", [PYTHON, "-m", "bench.pgq_worker"], env) for _ in range(count)]
    for worker in workers:
        worker.wait_for_output(READY)
    return workers


def queue_is_empty(conn: Connection) -> bool:
    """No job is queued or running: each is deleted from `pgqueuer` as its log row is written."""
    return not scalar(conn, "SELECT EXISTS (SELECT 1 FROM pgqueuer)")


def finished_jobs(conn: Connection) -> int:
    return scalar(conn, "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
