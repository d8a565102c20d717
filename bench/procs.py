"""Processes the bench starts: their environment, logs, readiness, memory, and a sure stop.

Every process is started in a session of its own (so a Ctrl-C in the terminal
reaches only the bench, which then stops them) with stdout and stderr in a log
file, and stopped with SIGTERM, then SIGKILL for its whole process group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL

T = TypeVar("T")


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a flask-tasks (or PGQueuer) process: this one's, with the database and no .env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PG"))}
    env.update(FLASK_TASKS_ENV_FILE="", DATABASE_URL=database_url, PYTHONUNBUFFERED="1", **extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T], timeout: float, interval: float = 0.02, what: str = "condition") -> T:
    """Poll until condition() is truthy and return its value; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(interval)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def children(pid: int) -> list[int]:
    """The pids of a process's direct children."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name, in parentheses, may hold spaces: the parent pid is after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


class Process:
    """One started process and its log file."""

    def __init__(self, name: str, popen: subprocess.Popen, log: Path) -> None:
        self.name, self.popen, self.log = name, popen, log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with code {code}; the end of its log:\n{self.tail()}")

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        """Wait until the process has written `text` to its log; fail if it exits first."""

        def seen() -> bool:
            self.check_alive()
            return text in self.output()

        wait_until(seen, timeout, 0.02, f"{self.name} printing {text!r}")

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM), if it still runs."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait_or_kill(self) -> None:
        """Wait up to STOP_TIMEOUT for it to exit, then SIGKILL its process group (gunicorn's workers too)."""
        try:
            self.popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        self.terminate()
        self.wait_or_kill()


class Processes:
    """The processes of one measurement; `with Processes(...) as procs:` stops them all at the end, even on errors."""

    def __init__(self, logdir: Path, label: str) -> None:
        self.logdir, self.label = logdir, label
        self.started: list[Process] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> Process:
        log = self.logdir / f"{self.label}-{name}-{len(self.started)}.log"
        with log.open("w") as out:
            popen = subprocess.Popen(
                command,
                cwd=PROJECT_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(f"{name} (pid {popen.pid})", popen, log)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:  # SIGTERM to all first, so they stop in parallel
            process.terminate()
        for process in self.started:
            process.wait_or_kill()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
