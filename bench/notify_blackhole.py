"""(i) Black-hole receiver: 2 handlers' drain while 1,000 deliveries hang, against their drain without them.

A receiver on 127.0.0.1 in the bench process accepts every connection
(listen backlog 4,096), keeps it open and never reads or answers it. Both sides
start 2 handlers the same way (WEBHOOK_SECRET set, NOTIFY_ALLOW_PRIVATE=true,
the default WEBHOOK_TIMEOUT=10 and WEBHOOK_CONCURRENCY=8) on a fresh database
and time a drain of 30,000 no-op tasks as (a) does. Normal: the handlers are
idle. Black hole: before the handlers start, 1,000 tasks already done are
inserted, each with a delivery to the receiver due now; once the receiver holds
16 connections (every delivery thread of both handlers waiting for an answer)
the no-op tasks are inserted. Each attempt waits 10 s, so the deliveries hang
for the whole drain. Tasks/s of both, their ratio (target ≥ 0.9), and the
connections the receiver held open (the fewest seen at the start or end of a
drain). In each run of the full bench, each figure is the median of 3 drains,
each side in turn, a fresh database each.
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import threading
import time

from bench import ours
from bench.context import Bench, Figures
from bench.drain import check_all_done, timeout_for
from bench.pg import Connection, connect, create_schema, execute, insert_noop_tasks, queue_is_empty, scalar
from bench.procs import Process, Processes, wait_until

HANGING = 1_000  # deliveries due to the black hole
HANDLERS = 2
CONCURRENCY = 8  # WEBHOOK_CONCURRENCY's default: delivery threads per handler
WEBHOOK_ENV = {"NOTIFY_ALLOW_PRIVATE": "true", "WEBHOOK_TIMEOUT": "10", "WEBHOOK_CONCURRENCY": str(CONCURRENCY)}


class BlackHole:
    """A TCP receiver on 127.0.0.1 that accepts every connection and never reads from it or answers.

    One thread waits in poll(): new connections on the listening socket, and, on each accepted one,
    only POLLRDHUP (the client gave up and closed), which needs no read. `held` is how many are open.
    """

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))  # loopback only
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.open: dict[int, socket.socket] = {}
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="black hole", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def held(self) -> int:
        return len(self.open)

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == self._stop_read:
                    return
                if fd == self.listener.fileno():
                    while True:
                        try:
                            sock, _ = self.listener.accept()
                        except BlockingIOError:
                            break
                        self.open[sock.fileno()] = sock
                        self.accepted += 1
                        poller.register(sock, select.POLLRDHUP)
                else:  # the client closed its end (POLLRDHUP, POLLHUP or POLLERR): drop ours
                    poller.unregister(fd)
                    self.open.pop(fd).close()

    def close(self) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join()
        for sock in self.open.values():
            sock.close()
        self.open.clear()
        self.listener.close()
        os.close(self._stop_read)
        os.close(self._stop_write)

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def insert_hanging_deliveries(conn: Connection, url: str, count: int) -> None:
    """`count` tasks already done, each with its delivery to `url` due now (committed on return)."""
    execute(
        conn,
        "INSERT INTO tasks (type, args, status, attempts, started, finished, expire,"
        " notify_url, notify_status, notify_next) "
        "SELECT 'noop', '{}', 'done', 1, now(), now(), now() + interval '1 hour', %s, 'pending', now() "
        "FROM generate_series(1, %s)",
        (url, count),
    )


def start_handlers(procs: Processes, url: str, secret: str) -> list[Process]:
    return ours.start_handlers(procs, url, HANDLERS, WEBHOOK_SECRET=secret, **WEBHOOK_ENV)


def timed_drain(conn: Connection, tasks: int, already_done: int) -> float:
    """Insert `tasks` no-op tasks and wait until none is left, as (a) does: tasks/s from the insert's commit."""
    insert_noop_tasks(conn, tasks)
    committed = time.monotonic()
    wait_until(lambda: queue_is_empty(conn), timeout_for(tasks), 0.02, "all tasks done")
    elapsed = time.monotonic() - committed
    check_all_done(scalar(conn, "SELECT count(*) FROM tasks WHERE status = 'done'") - already_done, tasks)
    return tasks / elapsed


def drain_normal(bench: Bench, secret: str) -> float:
    with bench.server.fresh_database() as url, Processes(bench.logdir, "notify-normal") as procs:
        create_schema(url)
        start_handlers(procs, url, secret)
        conn = connect(url)
        try:
            return timed_drain(conn, bench.sizes.drain_tasks, 0)
        finally:
            conn.close()


def drain_blackhole(bench: Bench, secret: str) -> tuple[float, int, int]:
    """Tasks/s with the deliveries hanging, and the connections the black hole held at the drain's start and end."""
    with (
        BlackHole() as hole,
        bench.server.fresh_database() as url,
        Processes(bench.logdir, "notify-blackhole") as procs,
    ):
        create_schema(url)
        conn = connect(url)
        try:
            insert_hanging_deliveries(conn, hole.url, HANGING)
            handlers = start_handlers(procs, url, secret)
            wanted = HANDLERS * CONCURRENCY

            def all_hanging() -> bool:
                for handler in handlers:
                    handler.check_alive()
                return hole.held >= wanted

            wait_until(all_hanging, 30, 0.02, f"the black hole holding {wanted} connections")
            at_start = hole.held
            rate = timed_drain(conn, bench.sizes.drain_tasks, HANGING)
            at_end = hole.held
            attempts = scalar(conn, "SELECT sum(notify_attempts) FROM tasks WHERE notify_url IS NOT NULL")
        finally:
            conn.close()
        if attempts != hole.accepted:
            bench.note(f"notify_blackhole: {attempts} delivery attempts claimed, {hole.accepted} connections accepted")
    return rate, at_start, at_end


def measure(bench: Bench) -> Figures:
    from flask_tasks.webhooks import generate_secret

    secret = generate_secret()
    normal, hung, held = [], [], []
    for _ in range(bench.sizes.repeats):
        normal.append(drain_normal(bench, secret))
        rate, at_start, at_end = drain_blackhole(bench, secret)
        hung.append(rate)
        held += [at_start, at_end]
    print(
        f"  2 handlers: {', '.join(f'{r:,.0f}' for r in normal)} tasks/s normally;"
        f" {', '.join(f'{r:,.0f}' for r in hung)} tasks/s with {HANGING:,} deliveries hanging"
        f" (connections held at each drain's start and end: {', '.join(map(str, held))})",
        flush=True,
    )
    return {
        "notify_blackhole_normal": statistics.median(normal),
        "notify_blackhole_hung": statistics.median(hung),
        "notify_blackhole_held": min(held),
    }
