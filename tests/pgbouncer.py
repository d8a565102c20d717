"""Debian's PgBouncer in front of the test PostgreSQL, as a deployment would put it.

Its configuration is PgBouncer's stock one but for what a deployment must set: where
it listens (a free loopback port, no Unix socket), how clients log in (trust, with
the server's user in an auth_file), where the server is (a `*` entry: every database
name goes to the same name on the server) and `pool_mode = transaction`. In
particular it keeps `ignore_startup_parameters` empty, so it refuses the `options`
startup parameter, as a stock PgBouncer does.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2.extensions
import pytest

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"

# What the server under test needs from a deployment behind PgBouncer in transaction mode (README).
SETTINGS = {"PREPARE_STATEMENTS": "false", "LISTEN_NOTIFY": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class PgBouncer:
    """A running pgbouncer process; url() turns a URL of the server into one through it."""

    def __init__(self, process: subprocess.Popen, port: int, user: str, password: str | None, log: Path) -> None:
        self.process, self.port, self.user, self.password, self.log = process, port, user, password, log

    def url(self, server_url: str) -> str:
        """The same database and user, through PgBouncer."""
        database = urlsplit(server_url).path.lstrip("/") or "postgres"
        login = self.user + (f":{self.password}" if self.password else "")
        return urlunsplit(("postgresql", f"{login}@127.0.0.1:{self.port}", f"/{database}", "", ""))

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: PgBouncer closes everything at once
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _run_as(host: str) -> str | None:
    """The user to run pgbouncer as, when root (it refuses to run as root): one that can reach the server.

    A server on a Unix socket (the embedded PostgreSQL's sits in its data directory,
    mode 0700) is reachable by the owner of the socket's directory; else anyone.
    """
    if os.geteuid() != 0:
        return None
    if host.startswith("/"):
        return pwd.getpwuid(os.stat(host).st_uid).pw_name
    return "nobody"


@contextmanager
def running_pgbouncer(server_url: str, **settings: object) -> Iterator[PgBouncer]:
    """pgbouncer in front of the server of `server_url`, stopped afterwards; `settings` go in [pgbouncer]
    (e.g. default_pool_size, max_client_conn for a measurement). Skips the test if it is not installed."""
    if not os.access(PGBOUNCER, os.X_OK):
        pytest.skip(f"PgBouncer is not installed ({PGBOUNCER}): apt-get install pgbouncer")
    server = psycopg2.extensions.parse_dsn(server_url)
    host, user = server.get("host", "localhost"), server.get("user") or pwd.getpwuid(os.geteuid()).pw_name
    password = server.get("password") or None
    run_as = _run_as(host)
    # Its own directory, readable by the user it runs as.
    workdir = Path(tempfile.mkdtemp(prefix="ft-pgbouncer-"))
    workdir.chmod(0o755)
    auth_file = workdir / "userlist.txt"
    auth_file.write_text(f"{_quoted(user)} {_quoted(password or '')}\n")  # its password, to log in to the server
    log = workdir / "pgbouncer.log"
    bouncer = None
    try:
        for _ in range(3):  # the free port may be taken before pgbouncer binds it: try another
            port = _free_port()
            lines = [
                "[databases]",
                f"* = host={host} port={server.get('port', '5432')}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {auth_file}",
                "pool_mode = transaction",
                *(f"{name} = {value}" for name, value in settings.items()),
            ]
            ini = workdir / "pgbouncer.ini"
            ini.write_text("\n".join(lines) + "\n")
            for path in (auth_file, ini):
                path.chmod(0o644)
            command = [PGBOUNCER, *(["-u", run_as] if run_as else []), str(ini)]
            with log.open("a") as out:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            bouncer = PgBouncer(process, port, user, password, log)
            if _wait_listening(bouncer):
                break
            bouncer.stop()
            bouncer = None
        if bouncer is None:
            raise RuntimeError(f"pgbouncer did not start:\n{log.read_text(errors='replace')}")
        yield bouncer
    finally:
        if bouncer is not None:
            bouncer.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_listening(bouncer: PgBouncer, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bouncer.process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", bouncer.port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def server_connections(conn: psycopg2.extensions.connection, database: str) -> int:
    """Connections to `database` on the server, but `conn`'s own (PostgreSQL's own count, pg_stat_activity)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'",
            (database,),
        )
        return cur.fetchone()[0]
