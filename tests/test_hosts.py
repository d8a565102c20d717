"""Handlers, janitor and web on other hosts than PostgreSQL: network namespaces with a delaying proxy between.

Each test makes 3 test hosts (tests/netlab.py: namespaces ftt-h1..3 on 10.201.x.0/24); PostgreSQL
stays on the host's loopback and every process in a namespace reaches it through the proxy, which
adds 2 ms to each round trip. Skipped, with the reason, where namespaces cannot be made (not root).
FAULTS_FULL=1 runs the sizes the issue states; without it, smaller ones.
"""

from __future__ import annotations

import json
import logging
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from flask_tasks.execution import CANCELLED, Outcome
from flask_tasks.handler import Handler
from tests import netlab
from tests.conftest import Processes, claim, enqueue, enqueue_many, query, wait_for
from tests.faults.conftest import FULL

RTT_MS = 2.0  # added by the proxy to every round trip between a test host and PostgreSQL
VENV_BIN = Path(sys.executable).parent


class Hosts:
    """A Lab of 3 test hosts and the proxy in front of the test database, for starting processes in them."""

    def __init__(self, lab: netlab.Lab, proxy: netlab.Proxy, processes: Processes, database_url: str) -> None:
        self.lab, self.proxy, self.processes, self.database_url = lab, proxy, processes, database_url

    def url(self, i: int) -> str:
        """The test database's URL as seen from host i: through the proxy, on the host's end of its link."""
        return self.proxy.url(self.database_url, self.lab.host_address(i))

    def start(self, i: int, *command: str, **env: str) -> subprocess.Popen:
        """A process (`handler.py`, `janitor.py`, or a command) inside host i, with the test's environment."""
        argv = [sys.executable, *command] if command[0].endswith(".py") else list(command)
        return self.processes.start(*self.lab.command(i, *argv), **{"DATABASE_URL": self.url(i), **env})

    def start_handlers(self, count: int, **env: str) -> list[subprocess.Popen]:
        """`count` handlers spread over the 3 hosts (named host<i>-<n>); returns once all are ready."""
        procs = [self.start(1 + n % 3, "handler.py", WORKER_NAME=f"host{1 + n % 3}-{n}", **env) for n in range(count)]
        self.wait_ready(procs, "ready for task types")
        return procs

    def wait_ready(self, procs: list[subprocess.Popen], line: str) -> None:
        def ready() -> bool:
            for proc in procs:
                assert proc.poll() is None, self.processes.output(proc)
            return all(line in self.processes.output(proc) for proc in procs)

        wait_for(ready, timeout=60, interval=0.1)


@pytest.fixture
def hosts(processes: Processes, database_url: str, tmp_path: Path) -> Iterator[Hosts]:
    reason = netlab.available()
    if reason:
        pytest.skip(reason)
    lab = netlab.Lab(prefix="ftt", subnet="10.201", hosts=3)
    with lab:
        listen = [lab.host_address(i) for i in lab.hosts]
        with netlab.Proxy(listen, netlab.pg_target(database_url), RTT_MS, log=tmp_path / "proxy.log") as proxy:
            yield Hosts(lab, proxy, processes, database_url)
            processes.stop_all()  # while the proxy still carries their last writes


def statuses(conn) -> dict[str, int]:
    return dict(query(conn, "SELECT status, count(*) FROM tasks GROUP BY status"))


def ended(conn) -> bool:
    return statuses(conn).keys() <= {"done", "failed", "cancelled"}


def effects_check(conn) -> tuple[int, int]:
    """(tasks without a side effect of their last attempt, tasks with more side effects than attempts).

    attempt_effects' primary key (task, attempt) already fails a second run of one attempt.
    """
    return query(
        conn,
        """SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM attempt_effects e
                                                     WHERE e.task_id = t.id AND e.attempt = t.attempts)),
                  count(*) FILTER (WHERE (SELECT count(*) FROM attempt_effects e WHERE e.task_id = t.id) > t.attempts)
           FROM tasks t""",
    )[0]


def stored_twice(outputs: list[str]) -> list[str]:
    """Task ids whose outcome the handlers' logs show stored more than once (each stored outcome is logged)."""
    stored: dict[str, int] = {}
    for text in outputs:
        for line in text.splitlines():
            found = re.search(r"task (\S+) \(\w+, attempt \d+\) \w+ in [\d.]+ s$", line)
            if found:
                stored[found.group(1)] = stored.get(found.group(1), 0) + 1
    return [task_id for task_id, times in stored.items() if times > 1]


# -- a handler out of touch with its leases, in process (no namespaces needed) -------------------


def task_rows(conn) -> dict[str, tuple]:
    rows = query(conn, "SELECT id::text, status, attempts, worker, last_error->>'message' FROM tasks")
    return {row[0]: row[1:] for row in rows}


def test_leases_lapse_out_of_touch_and_the_link_returns_before_a_rescue(conn, settings, registry, caplog):
    """No renewal for LEASE_SECONDS: the handler stops its task and drops those not started. Back in
    touch before anyone rescued them, it writes the stopped attempt as a lost one (counted, to run
    again) and gives the others back with their attempt undone."""
    caplog.set_level(logging.INFO, logger="flask_tasks.handler")
    for i in range(3):
        enqueue(conn, "add", {"x": i, "y": 1})
    handler = Handler(settings, registry)
    claimed = claim(handler)
    with handler.lock:  # the main thread starts the first
        handler.current = running = handler.queue.popleft()
    for token in handler.held:  # no renewal got through
        handler.held[token] = time.monotonic() - 0.1
    handler._check_leases()
    assert not handler.queue and handler.give_back == [task.token for task in claimed[1:]]
    assert f"stopping task {running.id} (add, attempt 1); dropping 2 claimed and not started" in caplog.text
    handler.current = None  # interrupted: the runner reports it as it reports a cancel
    handler._finish(running, Outcome("cancelled", error=CANCELLED), time.time(), 0.5)

    database = handler._db()  # the link is back: the database thread's next round
    handler._give_back(database)
    items, handler.outbox = handler.outbox, []
    handler._exchange(database, items, 0)
    rows = task_rows(conn)
    status, attempts, _, last_error = rows[running.id]
    assert (status, attempts) == ("waiting", 1) and last_error.startswith("attempt 1 was stopped")
    for task in claimed[1:]:
        assert rows[task.id][:2] == ("waiting", 0)
    assert not (handler.held or handler.abandoned or handler.give_back)
    handler.db.drop()


def test_a_renewal_that_finds_a_task_taken_over_stops_it_at_once(conn, settings, registry):
    task_id = enqueue(conn, "add", {"x": 1, "y": 1})
    handler = Handler(settings, registry)
    (task,) = claim(handler)
    with handler.lock:
        handler.current = handler.queue.popleft()
    query(conn, "UPDATE tasks SET claim_token = gen_random_uuid(), worker = 'other' WHERE id = %s", (task_id,))
    database = handler._db()
    handler._heartbeat(database)
    handler._check_leases()
    assert task.token in handler.abandoned  # long before its lease would have run out
    handler.current = None
    handler._finish(task, Outcome("cancelled", error=CANCELLED), time.time(), 0.1)
    items, handler.outbox = handler.outbox, []
    handler._exchange(database, items, 0)
    assert task_rows(conn)[task_id][:3] == ("running", 1, "other")  # fenced off
    assert not (handler.held or handler.abandoned)
    handler.db.drop()


# -- the lab itself ---------------------------------------------------------------------------


def test_the_proxy_delays_stalls_drops_and_refuses(hosts, report):
    """From the host, through the proxy on host 1's link: what the other tests rely on it to do."""
    url = hosts.url(1)

    def round_trip(conn) -> float:
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return time.perf_counter() - start

    conn = psycopg2.connect(url)
    conn.autocommit = True
    direct = psycopg2.connect(hosts.database_url)
    direct.autocommit = True
    base = sorted(round_trip(direct) for _ in range(20))[10]
    proxied = sorted(round_trip(conn) for _ in range(20))[10]
    # Medians, give or take a quarter: the proxy makes up for its timer's lateness on average.
    assert proxied >= base + 0.75 * RTT_MS / 1000
    hosts.proxy.set_delay(20)
    slower = sorted(round_trip(conn) for _ in range(5))[2]
    assert slower >= base + 0.015
    hosts.proxy.set_delay(RTT_MS)
    figures = f"direct {base * 1000:.2f} ms, through the proxy adding {RTT_MS:g} ms {proxied * 1000:.2f} ms"
    report("SELECT 1 round trip, median of 20", figures)

    hosts.proxy.stall(1.0)
    assert round_trip(conn) >= 0.9  # held, then answered: the connection lives on

    assert hosts.proxy.drop() == 1
    with pytest.raises(psycopg2.OperationalError):
        round_trip(conn)

    hosts.proxy.refuse(1.5)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(url)
    time.sleep(1.6)
    again = psycopg2.connect(url)
    assert round_trip(again) < 1
    stats = hosts.proxy.stats()
    assert (stats["dropped"], stats["refused"]) == (1, 1)
    for c in (again, direct):
        c.close()


def test_a_process_inside_a_host_reaches_only_the_proxy(hosts):
    """The namespace has no route to the host's loopback: PostgreSQL is reached through the proxy or not at all."""
    probe = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)"
    through_proxy = hosts.lab.run(1, [sys.executable, "-c", probe, hosts.lab.host_address(1), str(hosts.proxy.port)])
    assert through_proxy.returncode == 0
    to_loopback = hosts.lab.run(1, [sys.executable, "-c", probe, "127.0.0.1", str(hosts.proxy.control_port)])
    assert to_loopback.returncode != 0


# -- handlers across hosts --------------------------------------------------------------------

# Full: the sizes. Fast: 4 handlers only, with enough tasks for each to take part.
DRAIN_TASKS = 20_000 if FULL else 1_000


@pytest.mark.parametrize("handlers", [2, 4, 8] if FULL else [4])
def test_handlers_on_three_hosts_run_every_task_once(conn, hosts, report, handlers):
    """2, 4 and 8 handlers over 3 hosts at 2 ms from PostgreSQL: every task done, each exactly once."""
    hosts.start_handlers(handlers)
    enqueue_many(conn, "effect", [{"seconds": 0}] * DRAIN_TASKS)  # the handlers are woken by NOTIFY
    started = time.monotonic()
    wait_for(lambda: ended(conn), timeout=900 if FULL else 120, interval=0.2)
    elapsed = time.monotonic() - started

    assert statuses(conn) == {"done": DRAIN_TASKS}  # none lost
    assert query(conn, "SELECT count(*) FROM tasks WHERE attempts <> 1")[0][0] == 0  # none claimed twice
    assert effects_check(conn) == (0, 0)  # each run once
    assert query(conn, "SELECT count(*) FROM attempt_effects")[0][0] == DRAIN_TASKS
    per_host = dict(query(conn, "SELECT split_part(worker, '-', 1), count(*) FROM tasks GROUP BY 1 ORDER BY 1"))
    assert len(per_host) >= 2, per_host  # handlers on different hosts shared the work
    report("tasks / handlers / RTT", f"{DRAIN_TASKS} / {handlers} / {RTT_MS:g} ms added")
    report("drained in", f"{elapsed:.1f} s ({DRAIN_TASKS / elapsed:.0f} tasks/s, each writing its side effect)")
    report("tasks per host", per_host)


def test_a_host_cut_off_loses_its_tasks_to_another_and_stops_them(conn, hosts, report):
    """Host 1's link goes down while its handler holds two tasks (one running, one claimed ahead).

    After the lease, handlers on hosts 2 and 3 rescue and finish both; the cut-off handler stops
    its task when its lease may have run out, and when the link comes back its late outcome is
    fenced off: each task's outcome stored once, from the rescuing attempt.
    """
    lease, seconds = 3, 8.0  # a task runs well past the lease
    settings = {"LEASE_SECONDS": str(lease), "RETRY_BACKOFF": "0.2"}
    enqueue_many(conn, "effect", [{"seconds": seconds}] * 2, max_attempts=5)
    victim = hosts.start(1, "handler.py", WORKER_NAME="victim", BATCH_SIZE="2", **settings)
    wait_for(lambda: query(conn, "SELECT count(*) FROM attempt_effects")[0][0] == 1, timeout=60)
    hosts.lab.cut(1)
    cut = time.monotonic()
    time.sleep(0.1)  # for what the proxy still held from before the cut
    # The task it runs, and normally the other, claimed ahead (unless it gave that back after a second).
    held = [row[0] for row in query(conn, "SELECT id FROM tasks WHERE worker = 'victim' AND status = 'running'")]
    assert len(held) in (1, 2)
    rescuers = [hosts.start(i, "handler.py", WORKER_NAME=f"rescuer{i}", BATCH_SIZE="1", **settings) for i in (2, 3)]

    # The cut-off handler stops its task once the lease may have run out (its renewals get no answer).
    wait_for(lambda: "lost touch with its leases" in hosts.processes.output(victim), timeout=lease + 15)
    stopped_after = time.monotonic() - cut
    # Handlers on the other hosts rescue both tasks after the lease and run them again.
    rerun = "SELECT count(*) FROM attempt_effects WHERE attempt = 2 AND task_id = ANY(%s::uuid[])"
    wait_for(lambda: query(conn, rerun, ([str(i) for i in held],))[0][0] == len(held), timeout=60)
    rescued_after = time.monotonic() - cut
    hosts.lab.restore(1)
    restored = time.monotonic()
    # Back in touch, the cut-off handler sends its late outcome: fenced off, the task being another's now.
    wait_for(lambda: "its claim was taken over" in hosts.processes.output(victim), timeout=120, interval=0.2)
    fenced_after = time.monotonic() - restored
    wait_for(lambda: ended(conn), timeout=60)

    victim_log = hosts.processes.output(victim)
    late = re.search(r"\(effect, attempt 1\) \w+ in ([\d.]+) s \(not stored", victim_log)
    assert late is not None, victim_log
    assert float(late.group(1)) < seconds - 2  # it was stopped, not left to finish
    assert statuses(conn) == {"done": 2}
    rows = query(conn, "SELECT id, attempts, result, worker, last_error->>'message' FROM tasks")
    for task_id, attempts, result, worker, last_error in rows:
        assert worker.startswith("rescuer")
        if task_id in held:  # rescued: the result of attempt 2, the rescue's error (not the late outcome's)
            assert (attempts, result) == (2, 2)
            assert "attempt 1 was lost" in last_error
    assert effects_check(conn) == (0, 0)
    # The task running at the cut ran twice (on host 1, then on another); the other once, elsewhere.
    assert query(conn, "SELECT count(*) FROM attempt_effects")[0][0] == 3
    assert stored_twice([hosts.processes.output(p) for p in [victim, *rescuers]]) == []
    dropped = re.search(r"dropping (\d+) claimed and not started", victim_log)
    report("lease / task length", f"{lease} s / {seconds:g} s")
    report(
        "cut-off handler stopped its task", f"{stopped_after:.1f} s after the cut (dropped {dropped and dropped[1]})"
    )
    report("both tasks running again on other hosts", f"{rescued_after:.1f} s after the cut")
    report("late outcome fenced off", f"{fenced_after:.1f} s after the link came back")


def test_a_proxy_dropping_and_stalling_at_random_loses_nothing(conn, hosts, report):
    """For 30 s (fast: 8 s) the proxy resets connections, holds all traffic, refuses new connections,
    at random: the handlers retry, tasks whose lease lapsed are rescued; every task ends done, none
    stored twice.

    The tasks record nothing themselves (a task's own connection dropped mid-run would fail it):
    the tasks table and the handlers' logs of what they stored are the evidence.
    """
    chaos, tasks = (30.0, 12_000) if FULL else (6.0, 2_000)
    settings = {"LEASE_SECONDS": "3", "RETRY_BACKOFF": "0.2", "BATCH_SIZE": "20"}
    handlers = hosts.start_handlers(3, **settings)
    enqueue_many(conn, "sleep", [{"seconds": 0.005}] * tasks, max_attempts=20)
    started = time.monotonic()
    faults = {"drop": 0, "stall": 0, "refuse": 0, "connections reset": 0}
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)  # reported: the same faults again with this seed
    while time.monotonic() - started < chaos:
        time.sleep(rng.uniform(0.3, 1.0))
        fault = rng.choice(["drop", "drop", "stall", "refuse"])
        faults[fault] += 1
        if fault == "drop":
            faults["connections reset"] += hosts.proxy.drop(rng.uniform(0.2, 1.0))
        elif fault == "stall":
            hosts.proxy.stall(rng.choice([0.2, 0.5, 1.0, 2.0, 4.0]))  # 4 s: longer than the lease
        else:
            hosts.proxy.refuse(rng.uniform(0.2, 1.5))
    waiting_after_chaos = statuses(conn)
    wait_for(lambda: ended(conn), timeout=300, interval=0.5)
    elapsed = time.monotonic() - started

    counts = statuses(conn)
    assert counts == {"done": tasks}  # none lost, none failed
    outputs = [hosts.processes.output(p) for p in handlers]
    assert stored_twice(outputs) == []
    assert all(p.poll() is None for p in handlers)
    retried = query(conn, "SELECT count(*), coalesce(max(attempts), 0) FROM tasks WHERE attempts > 1")[0]
    report("tasks / handlers / chaos", f"{tasks} / 3 / {chaos:g} s")
    report("faults", f"{faults} (seed {seed})")
    report("after the chaos", waiting_after_chaos)
    report("tasks run again (most attempts)", f"{retried[0]} ({retried[1]})")
    report("handlers out of touch with a lease", sum(o.count("lost touch with its leases") for o in outputs))
    report("all done after", f"{elapsed:.1f} s")


# -- the web and the janitor on other hosts -----------------------------------------------------


def http(method: str, url: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.load(response)


def test_web_janitor_and_handlers_each_on_their_own_host(conn, hosts, report):
    """The web on host 3 (posted to from the host at its address), the janitor on host 2, handlers on
    host 1: tasks run once each; a handler killed mid-task has its task rescued by the janitor."""
    tasks = 5_000 if FULL else 500
    settings = {"LEASE_SECONDS": "2", "JANITOR_INTERVAL": "1", "RETRY_BACKOFF": "0.2"}
    web = hosts.start(
        3, str(VENV_BIN / "gunicorn"), "app:app", "-c", "gunicorn.conf.py", "--bind", "0.0.0.0:8000",
        GUNICORN_WORKERS="1",
    )  # fmt: skip
    janitor = hosts.start(2, "janitor.py", **settings)
    base = f"http://{hosts.lab.ns_address(3)}:8000"

    def answers() -> bool:
        assert web.poll() is None, hosts.processes.output(web)
        try:
            return http("GET", f"{base}/tasks")[0] == 200
        except OSError:
            return False

    wait_for(answers, timeout=60, interval=0.2)
    handlers = [hosts.start(1, "handler.py", WORKER_NAME=f"host1-{n}", **settings) for n in range(2)]
    started = time.monotonic()
    posted = []
    for _ in range(0, tasks, 250):
        status, answer = http("POST", f"{base}/task", [{"type": "effect", "args": {"seconds": 0}}] * 250)
        assert status == 201
        posted += [task["id"] for task in answer]
    wait_for(lambda: ended(conn), timeout=300, interval=0.2)
    elapsed = time.monotonic() - started
    assert statuses(conn) == {"done": tasks}
    assert query(conn, "SELECT count(*) FROM tasks WHERE attempts <> 1")[0][0] == 0
    assert effects_check(conn) == (0, 0)
    sample = random.sample(posted, 5)
    for task_id in sample:  # read back through the web, as a client would
        status, row = http("GET", f"{base}/task/{task_id}")
        assert (status, row["status"], row["result"]) == (200, "done", 1)

    # Kill every handler while one runs a slow task: only the janitor, on another host, can rescue it.
    status, slow = http("POST", f"{base}/task", {"type": "effect", "args": {"seconds": 3}})
    wait_for(lambda: http("GET", f"{base}/task/{slow['id']}")[1]["status"] == "running", timeout=30)
    for handler in handlers:
        handler.send_signal(signal.SIGKILL)
        handler.wait()
    killed = time.monotonic()
    rescued = wait_for(
        lambda: (row := http("GET", f"{base}/task/{slow['id']}")[1])["status"] == "waiting" and row, timeout=30
    )
    rescued_after = time.monotonic() - killed
    assert "attempt 1 was lost" in rescued["last_error"]["message"]
    assert f"task {slow['id']} had lost its handler" in hosts.processes.output(janitor)
    hosts.start(1, "handler.py", WORKER_NAME="host1-again", **settings)
    row = wait_for(lambda: (row := http("GET", f"{base}/task/{slow['id']}")[1])["status"] == "done" and row, timeout=60)
    assert (row["attempts"], row["result"], row["worker"]) == (2, 2, "host1-again")
    report("tasks posted through the web on host 3, run on host 1", f"{tasks} in {elapsed:.1f} s")
    report("task of a killed handler rescued by the janitor on host 2", f"{rescued_after:.1f} s after the kill")
