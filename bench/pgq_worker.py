"""A PGQueuer 1.6.0 worker process for the bench: `python -m bench.pgq_worker` (env DATABASE_URL, BATCH_SIZE).

One QueueManager on an asyncpg connection, run continuously (LISTEN/NOTIFY) with
batch_size=BATCH_SIZE. Entrypoints: "noop" does nothing; "probe" records in the
table bench_probe the time it started, the job's payload being the sample number
(the PGQueuer side of the latency measurement). Prints "ready" once its listener
answers a health check; SIGTERM or SIGINT stop it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.domain.errors import FailingListenerError

READY = "ready"


async def wait_until_listening(qm: QueueManager, runner: asyncio.Task[None]) -> None:
    for _ in range(100):
        if runner.done():
            await runner  # raises what stopped it
            raise RuntimeError("the queue manager stopped before it was ready")
        try:
            await qm.listener_healthy(timeout=timedelta(seconds=0.2))
            return
        except FailingListenerError:
            continue
    raise RuntimeError("the queue manager's listener never answered")


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = os.environ["DATABASE_URL"]
    batch_size = int(os.environ.get("BATCH_SIZE", "100"))
    qm = QueueManager(Queries(AsyncpgDriver(await asyncpg.connect(url))))
    probe_pool = await asyncpg.create_pool(url, min_size=2, max_size=10)  # jobs run concurrently

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    @qm.entrypoint("probe")
    async def probe(job: Job) -> None:
        started = time.time()
        assert job.payload is not None
        await probe_pool.execute("INSERT INTO bench_probe (sample, started) VALUES ($1, $2)", int(job.payload), started)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, qm.shutdown.set)
    runner = asyncio.create_task(qm.run(batch_size=batch_size))
    await wait_until_listening(qm, runner)
    print(READY, flush=True)
    await runner
    await probe_pool.close()


if __name__ == "__main__":
    asyncio.run(main())
