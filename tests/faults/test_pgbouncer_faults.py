"""The crash-churn fault test (tests/faults/test_crashes.py) with every handler connected through
Debian's PgBouncer in transaction mode (tests/pgbouncer.py): SIGKILLed handlers leave their
PgBouncer client connections behind mid-transaction, yet nothing is lost or run twice."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg2
import pytest

from tests.conftest import Processes
from tests.faults import test_crashes
from tests.pgbouncer import SETTINGS, PgBouncer, running_pgbouncer, server_connections

POOL_SIZE = 20  # PgBouncer's default_pool_size, stock


@pytest.fixture
def pgbouncer(server_url: str, database_url: str) -> Iterator[PgBouncer]:
    # After database_url: stopped before the test's database is dropped.
    with running_pgbouncer(server_url) as bouncer:
        yield bouncer


@pytest.fixture
def bouncer_processes(processes: Processes, pgbouncer: PgBouncer, database_url: str) -> Processes:
    """The test's processes, connected through PgBouncer with the settings the README gives for it."""
    processes.env.update(DATABASE_URL=pgbouncer.url(database_url), **SETTINGS)
    return processes


def test_crash_churn_through_pgbouncer_loses_nothing(conn, bouncer_processes, pgbouncer, database_url, report):
    """As test_crash_churn_loses_nothing: SIGKILL a random handler every 2 s and restart it."""
    test_crashes.test_crash_churn_loses_nothing(conn, bouncer_processes, report)

    database = urlsplit(database_url).path.lstrip("/")
    used = server_connections(conn, database)  # PgBouncer's server connections (+ none of the test's: conn is direct)
    assert 1 <= used <= POOL_SIZE
    errors = [line for line in pgbouncer.output().splitlines() if "pooler error" in line]
    assert all(line.endswith("unsupported startup parameter: options") for line in errors), errors
    for proc in bouncer_processes.started:
        assert "refused the `options` startup parameter" in bouncer_processes.output(proc)
    report("PostgreSQL connections PgBouncer used at the end", used)
    psycopg2.connect(pgbouncer.url(database_url)).close()  # PgBouncer itself came through
