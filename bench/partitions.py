"""(p) Partitions: `tasks` partitioned by time against today's table, under a churn of 1,000,000 tasks.

Each side gets a fresh database: today's schema, or the same table partitioned by RANGE (created), a
partition per 2.5 s, MAX_TASK_TIME=10 s spanning 4 (built from schema.sql with what partitioning forces:
the primary key (id, created), the idempotency keys in a table of their own, the storage settings on each
partition; bench/partitions.sql). One driver runs both at the SQL level (real handlers fetch the rows they
claimed by ctid, unique only within a partition: the variant fetches them by id): 2 connections enqueue
batches of 1,000 no-op tasks with insert_tasks while fewer than 10,000 wait; 2 "handler" connections (the
handlers' options, prepared statements) loop on store_and_claim, storing their last batch done while
claiming the next 1,000; a "janitor" connection runs a round every 0.5 s. One task in 10,000 of the first
half fails its first attempt and is retried 20 s later: its partition is held past its time. Today's
janitor: rescue_lost_tasks, delete_expired_tasks by 1,000 until a short batch, VACUUM (SKIP_LOCKED) tasks
after a round that deleted (at most once a second). The partitioned one: makes the partitions of the next
10 s (CREATE TABLE LIKE, then ATTACH); a partition older than MAX_TASK_TIME + one interval is detached
CONCURRENTLY and dropped when nothing in it must be kept, left while its last tasks expire within an
interval, else (a task kept longer) its expired tasks are deleted row by row until it can go; VACUUM
(SKIP_LOCKED) of the younger partitions after a round that removed rows (at most once a second). A
checkpoint before each side. Figures per side: tasks/s from the first enqueue until every task is done;
CPU seconds of the database backends per task (handlers, enqueuers, janitor; from /proc, the server being
local); size of tasks' tables and indexes (the largest seen every 0.5 s, the largest after 90% done, at the
end); median time of get_task by id at the end; the janitor's seconds, CPU and WAL (pg_stat_get_backend_wal,
PostgreSQL 18) in deleting rows, looking at and dropping partitions, vacuuming; WAL of the whole churn.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from bench.context import Bench, Figures
from bench.pg import Connection, connect, create_schema, execute, scalar
from flask_tasks import db
from flask_tasks.enqueue import new_ids
from flask_tasks.sql import QUERIES, SCHEMA

STATEMENTS_FILE = Path(__file__).with_name("partitions.sql")
BATCH = 1000  # tasks per enqueue, and per claim (the handlers' BATCH_SIZE)
BACKLOG = 10_000  # the enqueuers wait while this many tasks are waiting
HANDLERS = 2
JANITOR_INTERVAL = 0.5  # seconds between two janitor rounds
JANITOR_BATCH = 1000  # the janitor's default JANITOR_BATCH
VACUUM_EVERY = 1.0  # seconds, at least, between two vacuums (as the janitor)
AHEAD = 10.0  # seconds of partitions made ahead of now (3 intervals at least): a late janitor round must not
# leave an insert without its partition (it would fail)
KEPT_SHARE = 0.5  # tasks kept longer are among the first half of the churn: the later partitions hold none
SAMPLE_EVERY = 0.5  # seconds between two size samples
LATE = 0.9  # the size is also watched from this share of the tasks done on: no partition is held by then
LEASE = 30.0
POLL = 0.05  # seconds an idle handler waits for an insert before it claims again
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ENQUEUERS = 2  # connections enqueueing, so that the handlers never wait for tasks
# What the web sends for each task of POST /task with no options besides type and args (enqueue.task_fields),
# for a type with no timeout of its own and TASK_TIMEOUT unset.
TASK_FIELDS = {"max_attempts": 3}


@dataclass(frozen=True)
class Churn:
    tasks: int  # enqueued, run and cleaned up
    keep: float  # MAX_TASK_TIME, seconds
    interval: float  # seconds of created per partition
    kept_every: int  # one task in this many fails its first attempt and is retried 2 x keep later


FULL = Churn(tasks=1_000_000, keep=10.0, interval=2.5, kept_every=10_000)
QUICK = Churn(tasks=10_000, keep=1.0, interval=0.5, kept_every=1_000)


def _statements(text: str) -> dict[str, str]:
    """The `-- name: description` statements of a file, as flask_tasks/sql reads queries.sql."""
    found = list(re.finditer(r"^-- (\w+): .*$", text, re.MULTILINE))
    ends = [m.start() for m in found[1:]] + [len(text)]
    return {m.group(1): text[m.end() : end].strip().rstrip(";") for m, end in zip(found, ends, strict=True)}


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise RuntimeError(f"expected one {old!r} in the product's SQL: bench/partitions.py needs updating")
    return text.replace(old, new)


STATEMENTS = _statements(STATEMENTS_FILE.read_text())

# The claim of today's store_and_claim fetches the locked rows by ctid: within a partitioned table a
# ctid names a row in each partition, so the update would change rows of other partitions that it
# never locked. By id instead (unique in practice: 74 random bits; the database can no longer enforce it).
CLAIM_BY_CTID = "WHERE t.ctid = ANY(ARRAY(\n        SELECT ctid FROM tasks"
CLAIM_BY_ID = "WHERE t.id = ANY(ARRAY(\n        SELECT id FROM tasks"


def partitioned_schema() -> tuple[str, str]:
    """schema.sql with tasks partitioned by RANGE (created), and the storage settings each partition takes."""
    ddl = _replace_once(
        SCHEMA,
        "id               uuid PRIMARY KEY DEFAULT flask_tasks_new_id(),",
        "id               uuid NOT NULL DEFAULT flask_tasks_new_id(),",
    )
    # A partitioned table takes no storage settings (its partitions do), and its primary key must hold created.
    table_end = re.search(r"\n\) WITH \((.*?)\);\n", ddl, re.DOTALL)
    if table_end is None:
        raise RuntimeError("no `) WITH (...);` after the tasks columns: bench/partitions.py needs updating")
    options = ", ".join(
        line.split("--")[0].strip().rstrip(",") for line in table_end.group(1).splitlines() if line.split("--")[0]
    )
    ddl = ddl.replace(table_end.group(0), ",\n    PRIMARY KEY (id, created)\n) PARTITION BY RANGE (created);\n", 1)
    # Nor a unique index without created: the keys move to task_idempotency_keys.
    unique = re.search(r"CREATE UNIQUE INDEX tasks_idempotency_key_idx .*?;\n", ddl, re.DOTALL)
    if unique is None:
        raise RuntimeError("no tasks_idempotency_key_idx in schema.sql: bench/partitions.py needs updating")
    ddl = ddl.replace(unique.group(0), "")
    return ddl + "\n" + STATEMENTS["idempotency_keys"] + ";\n", options


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


class Prepared:
    """A statement prepared on each connection before its first run, as the product's handlers and web do."""

    def __init__(self, name: str, text: str) -> None:
        self.name, self.names = name, []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in self.names:
                self.names.append(match.group(1))
            return f"${self.names.index(match.group(1)) + 1}"

        self.prepare = f"PREPARE {name} AS " + _PLACEHOLDER.sub(number, text).replace("%%", "%")
        self.execute = f"EXECUTE {name}({', '.join(['%s'] * len(self.names))})"

    def run(self, conn: Connection, params: dict[str, Any]) -> list[tuple]:
        with conn.cursor() as cur:
            if self.name not in conn.prepared:  # type: ignore[attr-defined]
                cur.execute(self.prepare)
                conn.prepared.add(self.name)  # type: ignore[attr-defined]
            cur.execute(self.execute, [params[key] for key in self.names])
            return cur.fetchall() if cur.description else []


# --- the two sides ---------------------------------------------------------------------------------------


# What a janitor's time and WAL are counted under: deleting rows; looking whether a partition past its time
# may go; detaching and dropping it; vacuuming; the rest (rescue_lost_tasks, making partitions).
WORK = ("delete", "look", "drop", "vacuum", "other")


@dataclass
class Cleanup:
    """What a janitor did in a churn, for each WORK: seconds in its statements, and the CPU seconds and WAL of its
    backend (None when they cannot be read)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(WORK, 0.0))
    cpu: dict[str, float] | None = field(default_factory=lambda: dict.fromkeys(WORK, 0.0))
    wal: dict[str, float] | None = field(default_factory=lambda: dict.fromkeys(WORK, 0.0))
    deleted: int = 0  # rows deleted one by one
    dropped: int = 0  # partitions dropped
    kept_back: int = 0  # janitor rounds that found a partition past its time holding a task kept longer

    @contextlib.contextmanager
    def doing(self, conn: Connection, work: str) -> Iterator[None]:
        """Count what the statements run inside cost under `work` (reading the counters is not counted)."""
        wal, cpu = backend_wal(conn), backend_cpu(conn)
        started = time.monotonic()
        yield
        self.seconds[work] += time.monotonic() - started
        cpu_after, wal_after = backend_cpu(conn), backend_wal(conn)
        for counts, before, after in ((self.cpu, cpu, cpu_after), (self.wal, wal, wal_after)):
            if counts is not None and before is not None and after is not None:
                counts[work] += after - before
        if None in (cpu, cpu_after):
            self.cpu = None
        if None in (wal, wal_after):
            self.wal = None


def backend_wal(conn: Connection) -> float | None:
    """The WAL this connection's backend has written (pg_stat_get_backend_wal: PostgreSQL 18); None before 18."""
    try:
        execute(conn, "SELECT pg_stat_force_next_flush()")  # its counters up to now, not up to a second ago
        return float(scalar(conn, "SELECT wal_bytes FROM pg_stat_get_backend_wal(pg_backend_pid())"))
    except psycopg2.errors.UndefinedFunction:
        return None


def backend_cpu(conn: Connection) -> float | None:
    """CPU seconds (user and system) this connection's backend has used, when PostgreSQL runs on this machine
    (as the embedded one does): CPU time is what the shared cores give to it, not the wall time it waited."""
    try:
        stat = Path(f"/proc/{conn.get_backend_pid()}/stat").read_text()
    except OSError:
        return None
    name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
    if name != "postgres":  # another process with that pid: the server is elsewhere
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Today:
    """Today's table and janitor statements (janitor.py's clean_once and _vacuum)."""

    label = "today"

    def __init__(self, churn: Churn) -> None:
        self.churn = churn
        self.insert = Prepared("bench_insert_tasks", QUERIES["insert_tasks"])
        self.claim = Prepared("bench_store_and_claim", QUERIES["store_and_claim"])
        self.last_vacuum = 0.0

    def create(self, url: str) -> None:
        create_schema(url)

    def janitor_round(self, conn: Connection, done: Cleanup) -> None:
        with done.doing(conn, "other"):
            db.run(conn, "rescue_lost_tasks", {"limit": JANITOR_BATCH, "keep": self.churn.keep})
        deleted = 0
        with done.doing(conn, "delete"):
            while True:
                with conn.cursor() as cur:
                    cur.execute(QUERIES["delete_expired_tasks"], {"limit": JANITOR_BATCH})
                    deleted += cur.rowcount
                if cur.rowcount < JANITOR_BATCH:
                    break
        done.deleted += deleted
        if deleted and time.monotonic() - self.last_vacuum >= VACUUM_EVERY:
            self.last_vacuum = time.monotonic()
            with done.doing(conn, "vacuum"):
                execute(conn, QUERIES["vacuum_tasks"])


class Partitioned:
    """tasks partitioned by RANGE (created), and a janitor that drops whole partitions."""

    label = "partitioned"

    def __init__(self, churn: Churn) -> None:
        self.churn = churn
        self.insert = Prepared("bench_insert_tasks", STATEMENTS["insert_tasks"])
        claim = _replace_once(QUERIES["store_and_claim"], CLAIM_BY_CTID, CLAIM_BY_ID)
        self.claim = Prepared("bench_store_and_claim", claim)
        self.ddl, self.options = partitioned_schema()
        self.last_vacuum = 0.0

    def create(self, url: str) -> None:
        conn = db.connect(url, "flask-tasks bench schema")
        try:
            execute(conn, self.ddl)
            self.add_partitions(conn)
        finally:
            conn.close()

    @staticmethod
    def partitions(conn: Connection) -> list[tuple[float, str]]:
        """(start, name) of each partition, oldest first: the name holds its start in unix milliseconds."""
        names = scalar(conn, "SELECT array_agg(relid::text) FROM pg_partition_tree('tasks') WHERE isleaf") or []
        return sorted((int(name.removeprefix("tasks_p")) / 1000, name) for name in names)

    def add_partitions(self, conn: Connection) -> None:
        """The partitions from the current interval to AHEAD seconds (3 intervals at least) ahead.

        Made apart, then attached: CREATE TABLE ... PARTITION OF would lock the whole table
        (ACCESS EXCLUSIVE) and stall every claim; ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE.
        """
        step = self.churn.interval
        now = scalar(conn, "SELECT extract(epoch FROM now())::float8")
        have = {round(start, 3) for start, _ in self.partitions(conn)}
        first = int(now // step)
        for n in range(first, first + max(3, math.ceil(AHEAD / step)) + 1):
            start = n * step
            if round(start, 3) in have:
                continue
            name = sql.Identifier(f"tasks_p{round(start * 1000)}")
            execute(
                conn,
                sql.SQL("CREATE TABLE {} (LIKE tasks INCLUDING DEFAULTS INCLUDING CONSTRAINTS) WITH ({})").format(
                    name, sql.SQL(self.options)
                ),
            )
            execute(
                conn,
                sql.SQL("ALTER TABLE tasks ATTACH PARTITION {} FOR VALUES FROM (%s) TO (%s)").format(name),
                (_ts(start), _ts(start + step)),
            )

    def janitor_round(self, conn: Connection, done: Cleanup) -> None:
        step = self.churn.interval
        with done.doing(conn, "other"):
            db.run(conn, "rescue_lost_tasks", {"limit": JANITOR_BATCH, "keep": self.churn.keep})
            self.add_partitions(conn)
            # A partition holds nothing to keep from MAX_TASK_TIME after its end, but for tasks finished
            # late: one interval more lets those finished a little late expire too before it is looked at.
            horizon = scalar(conn, "SELECT extract(epoch FROM now())::float8") - self.churn.keep - step
            partitions = self.partitions(conn)
        removed, held, young = False, [], []
        for start, name in partitions:
            if start + step > horizon:
                young.append(name)
                continue
            bounds = {"low": _ts(start), "high": _ts(start + step)}
            with done.doing(conn, "look"):
                state = scalar(conn, STATEMENTS["partition_state"], {**bounds, "patience": step})
            if state == "drop":
                with done.doing(conn, "drop"):
                    state = self.drop(conn, name, bounds, done)
            removed = removed or state == "drop"
            if state == "held":
                done.kept_back += 1
                held.append(start)
        for start in held:  # delete its expired tasks row by row, as today, until it can be dropped
            bounds = {"low": _ts(start), "high": _ts(start + step), "limit": JANITOR_BATCH}
            with done.doing(conn, "delete"):
                while True:
                    deleted = scalar(conn, STATEMENTS["delete_expired_in"], bounds)
                    done.deleted += deleted
                    removed = removed or deleted > 0
                    if deleted < JANITOR_BATCH:
                        break
        if removed and time.monotonic() - self.last_vacuum >= VACUUM_EVERY:
            # Only the partitions still written: the older ones go whole, their dead rows with them.
            self.last_vacuum = time.monotonic()
            with done.doing(conn, "vacuum"):
                tables = sql.SQL(", ").join(map(sql.Identifier, young))
                execute(conn, sql.SQL("VACUUM (SKIP_LOCKED) {}").format(tables))

    def drop(self, conn: Connection, name: str, bounds: dict[str, datetime], done: Cleanup) -> str:
        """Detach and drop a partition that partition_state found free to go: 'drop', or 'wait' if a task in it
        was retried (or its delivery made due again) meanwhile."""
        table = sql.Identifier(name)
        # CONCURRENTLY: SHARE UPDATE EXCLUSIVE on tasks, so claims go on; a plain DETACH or a DROP of
        # an attached partition takes ACCESS EXCLUSIVE and stalls them.
        execute(conn, sql.SQL("ALTER TABLE tasks DETACH PARTITION {} CONCURRENTLY").format(table))
        # Detached, it is out of every other statement's reach: look again, for a task changed before that.
        kept = sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE status NOT IN ('done', 'failed', 'cancelled')"
            " OR expire >= now() OR notify_status = 'pending')"
        ).format(table)
        if scalar(conn, kept):
            execute(
                conn,
                sql.SQL("ALTER TABLE tasks ATTACH PARTITION {} FOR VALUES FROM (%(low)s) TO (%(high)s)").format(table),
                bounds,
            )
            return "wait"
        execute(conn, sql.SQL("DROP TABLE {}").format(table))
        execute(conn, STATEMENTS["forget_partition_keys"], bounds)
        done.dropped += 1
        return "drop"


def _ts(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


# --- the churn -------------------------------------------------------------------------------------------

SIZES = """
WITH tables AS (  -- the partitions, or today's table itself
    SELECT relid FROM pg_partition_tree('tasks') WHERE isleaf
    UNION ALL
    SELECT oid FROM pg_class WHERE oid = 'tasks'::regclass AND relkind = 'r'
)
SELECT coalesce(sum(pg_table_size(relid)), 0) + coalesce(pg_table_size(to_regclass('task_idempotency_keys')), 0),
       coalesce(sum(pg_indexes_size(relid)), 0) + coalesce(pg_indexes_size(to_regclass('task_idempotency_keys')), 0),
       count(*)
FROM tables
"""


@dataclass
class State:
    """What the threads of one churn share."""

    lock: threading.Condition = field(default_factory=threading.Condition)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)
    taken: int = 0  # tasks an enqueuer has begun to insert
    kept: int = 0  # tasks inserted that fail their first attempt
    claimed: int = 0  # first attempts claimed
    reclaimed: int = 0  # later attempts claimed
    done: int = 0  # stored as done
    claim_seconds: float = 0.0  # in store_and_claim
    claim_longest: float = 0.0
    cpu: dict[str, float | None] = field(default_factory=lambda: {"handlers": 0.0, "enqueuers": 0.0})

    def add_cpu(self, role: str, conn: Connection) -> None:
        """Count the CPU seconds of a connection's backend, at its end, under `role`."""
        seconds = backend_cpu(conn)
        with self.lock:
            total = self.cpu[role]
            self.cpu[role] = total + seconds if seconds is not None and total is not None else None

    def thread(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        """A thread that stops the churn with its error if it fails."""

        def run() -> None:
            try:
                target(*args)
            except BaseException as err:
                self.errors.append(err)
                self.stop.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def enqueuer(url: str, side: Today | Partitioned, state: State) -> None:
    """Batches of BATCH no-op tasks as POST /task stores a list of them, while fewer than BACKLOG wait."""
    churn = side.churn
    conn = db.connect(url, "flask-tasks bench web", prepare=True)
    try:
        while not state.stop.is_set():
            with state.lock:
                state.lock.wait_for(lambda: state.taken - state.claimed < BACKLOG or state.stop.is_set())
                first, count = state.taken, min(BATCH, churn.tasks - state.taken)
                state.taken += count
            if count <= 0:
                break
            rows, kept = [], 0
            for n, task_id in enumerate(new_ids(count), first):
                retried = n % churn.kept_every == churn.kept_every // 2 and n < churn.tasks * KEPT_SHARE
                kept += retried
                args = {"retry": True} if retried else {}
                rows.append({"id": task_id, "type": "noop", "args": args, **TASK_FIELDS})
            side.insert.run(conn, {"tasks": json.dumps(rows), "max_task_time": churn.keep})
            with state.lock:
                state.kept += kept
                state.lock.notify_all()  # for the handlers waiting for tasks
    finally:
        state.add_cpu("enqueuers", conn)
        conn.close()


def outcome(token: str, status: str, delay: float) -> str:
    """One outcome as handler_db.outcomes_json writes it."""
    row = f'{{"token":"{token}","status":"{status}","started":{time.time()!r}'
    if status == "done":
        return row + "}"
    return row + f',"error":{{"message":"retried"}},"delay":{delay!r}}}'


def handler(url: str, side: Today | Partitioned, state: State, name: str) -> None:
    """Claim BATCH tasks at a time and store them done with the next claim (a task marked to retry: waiting)."""
    churn = side.churn
    conn = db.connect(url, f"flask-tasks bench {name}", prepare=True, options=db.HANDLER_OPTIONS)
    held: list[str] = []  # the outcomes of the last claim
    try:
        while not state.stop.is_set():
            over = state.done >= churn.tasks
            if over and not held:
                return
            stored = sum('"status":"done"' in item for item in held)
            params = {"outcomes": f"[{','.join(held)}]", "types": ["noop"], "batch": 0 if over else BATCH}
            params.update(worker=name, lease=LEASE, keep=churn.keep)
            started = time.perf_counter()
            rows = side.claim.run(conn, params)
            took = time.perf_counter() - started
            if any(row[0] for row in rows):
                raise RuntimeError(f"{name}: outcomes fenced off: {[row[1] for row in rows if row[0]][:3]}")
            held, first = [], 0
            for _, _, _, args, token, attempt, *_ in rows:
                first += attempt == 1
                if args.get("retry") and attempt == 1:  # kept longer: tried again 2 x MAX_TASK_TIME later
                    held.append(outcome(token, "waiting", 2 * churn.keep))
                else:
                    held.append(outcome(token, "done", 0.0))
            with state.lock:
                if not rows and not stored:
                    # Nothing due: wait for an insert, as a handler for its NOTIFY (a retry due later: a poll).
                    state.lock.wait(POLL)
                    continue
                state.claimed += first
                state.reclaimed += len(rows) - first
                state.done += stored
                state.claim_seconds += took
                state.claim_longest = max(state.claim_longest, took)
                state.lock.notify_all()  # for the enqueuers: fewer wait
    finally:
        state.add_cpu("handlers", conn)
        conn.close()


def janitor(url: str, side: Today | Partitioned, state: State, done: Cleanup) -> None:
    """A round every JANITOR_INTERVAL until the churn ends."""
    conn = db.connect(url, "flask-tasks bench janitor", prepare=True)
    try:
        while not state.stop.is_set():
            side.janitor_round(conn, done)
            state.stop.wait(JANITOR_INTERVAL)
    finally:
        conn.close()


def run_churn(bench: Bench, side: Today | Partitioned) -> Figures:
    """One side's churn, on a fresh database: its figures (see the module's description)."""
    churn = side.churn
    state, done = State(), Cleanup()
    with bench.server.fresh_database() as url:
        side.create(url)
        conn = connect(url)
        try:
            try:
                execute(conn, "CHECKPOINT")  # both sides start with no page written since
            except psycopg2.Error as err:
                bench.note(f"partitions: no CHECKPOINT before the churn ({db.error_text(err)})")
            wal_start = scalar(conn, "SELECT pg_current_wal_lsn()")
            threads = [state.thread(janitor, url, side, state, done)]
            threads += [state.thread(handler, url, side, state, f"handler-{i}") for i in range(HANDLERS)]
            started = time.monotonic()
            threads += [state.thread(enqueuer, url, side, state) for _ in range(ENQUEUERS)]
            peak = late_peak = 0.0
            deadline = started + 120 + churn.tasks / 500
            try:
                while state.done < churn.tasks and not state.stop.is_set():
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"partitions ({side.label}): {state.done:,} of {churn.tasks:,} done")
                    with contextlib.suppress(psycopg2.Error):  # a partition dropped while measured: the next one
                        size = sum(sizes(conn)[:2])
                        peak = max(peak, size)
                        if state.done >= LATE * churn.tasks:
                            late_peak = max(late_peak, size)
                    state.stop.wait(SAMPLE_EVERY)
                elapsed = time.monotonic() - started
            finally:  # every thread ends before the database is dropped
                state.stop.set()
                with state.lock:
                    state.lock.notify_all()
                for thread in threads:
                    thread.join(60)
            if state.errors:
                raise state.errors[0]
            wal = float(scalar(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (wal_start,)))
            heap, index, tables = sizes(conn)
            rows, unfinished = scalar(
                conn, "SELECT array[count(*), count(*) FILTER (WHERE status <> 'done')] FROM tasks"
            )
            lookup = get_task_us(url, scalar(conn, "SELECT array_agg(id::text) FROM (SELECT id FROM tasks LIMIT 220)"))
        finally:
            conn.close()
    # Every task claimed once, those marked to retry twice, and done: a claim that reached rows it did
    # not lock (as by ctid across partitions) would show here.
    if (state.claimed, state.reclaimed, unfinished) != (churn.tasks, state.kept, 0):
        raise RuntimeError(
            f"partitions ({side.label}): {state.claimed:,} first and {state.reclaimed:,} later attempts claimed"
            f" for {churn.tasks:,} tasks, {state.kept} of them to retry; {unfinished} left not done"
        )
    mib = 1024 * 1024
    removed = churn.tasks - rows

    def per_task(seconds: float | None) -> float | None:
        return 1e6 * seconds / churn.tasks if seconds is not None else None

    busy = sum(done.seconds.values())
    figures: Figures = {
        "drain": churn.tasks / elapsed,
        "claim_us": 1e6 * state.claim_seconds / (state.claimed + state.reclaimed),
        "claim_max_ms": 1000 * state.claim_longest,
        "peak_mb": peak / mib,
        "late_peak_mb": late_peak / mib,
        "end_heap_mb": heap / mib,
        "end_index_mb": index / mib,
        "end_rows": rows,
        "tables": tables,
        "get_task_us": lookup,
        "removed": removed,
        "deleted": done.deleted,
        "dropped_rows": removed - done.deleted,
        "dropped": done.dropped,
        "kept_back": done.kept_back,
        "handler_cpu_us": per_task(state.cpu["handlers"]),
        "enqueue_cpu_us": per_task(state.cpu["enqueuers"]),
        "janitor_cpu_us": per_task(sum(done.cpu.values()) if done.cpu is not None else None),
        "janitor_s": busy,
        "janitor_rows_per_s": removed / busy if busy else None,
        "janitor_cpu_s": sum(done.cpu.values()) if done.cpu is not None else None,
        **{f"janitor_{work}_s": seconds for work, seconds in done.seconds.items()},
        **{f"janitor_{work}_cpu_s": done.cpu[work] if done.cpu is not None else None for work in WORK},
        "wal_mb": wal / mib,
        "wal_per_task": wal / churn.tasks,
        "janitor_wal_mb": sum(done.wal.values()) / mib if done.wal is not None else None,
    }
    for work in WORK:
        figures[f"janitor_{work}_wal_mb"] = done.wal[work] / mib if done.wal is not None else None
    return figures


def get_task_us(url: str, ids: list[str] | None) -> float | None:
    """The median time of GET /task/<id>'s statement (prepared, as the web runs it) for these ids, 20 first untimed."""
    if not ids or len(ids) <= 20:
        return None
    statement = Prepared("bench_get_task", QUERIES["get_task"])
    conn = db.connect(url, "flask-tasks bench web", prepare=True)
    try:
        took = []
        for task_id in ids:
            started = time.perf_counter()
            statement.run(conn, {"id": task_id, "operator": True, "subject": None})
            took.append(time.perf_counter() - started)
    finally:
        conn.close()
    return 1e6 * statistics.median(took[20:])


def sizes(conn: Connection) -> tuple[float, float, int]:
    """Bytes of tasks' tables (heap and TOAST) and of their indexes, and how many tables (partitions or one)."""
    with conn.cursor() as cur:
        cur.execute(SIZES)
        heap, index, tables = cur.fetchone()
    return float(heap), float(index), tables


def measure(bench: Bench) -> Figures:
    churn = FULL if bench.sizes.bloat_tasks >= FULL.tasks else QUICK  # as the bloat flow: 1,000,000 in full
    figures: Figures = {}
    for key, side in (("today", Today(churn)), ("part", Partitioned(churn))):
        found = run_churn(bench, side)
        figures.update({f"partitions_{key}_{name}": value for name, value in found.items()})
        print(f"  {side.label}: " + ", ".join(f"{name} {_fmt(value)}" for name, value in found.items()), flush=True)
    for name in RATIOS:
        top, bottom = figures.get(f"partitions_part_{name}"), figures.get(f"partitions_today_{name}")
        figures[f"partitions_ratio_{name}"] = top / bottom if top is not None and bottom else None
    print("  partitioned / today: " + ", ".join(f"{n} {_fmt(figures[f'partitions_ratio_{n}'])}" for n in RATIOS))
    return figures


RATIOS = (
    "drain",
    "claim_us",
    "handler_cpu_us",
    "enqueue_cpu_us",
    "janitor_cpu_us",
    "get_task_us",
    "peak_mb",
    "late_peak_mb",
    "janitor_s",
    "janitor_wal_mb",
    "wal_mb",
)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
