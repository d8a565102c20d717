"""Small helpers the tests share: apps with their own settings, a webhook receiver process, servers under gunicorn."""

from __future__ import annotations

import json
import json as _json  # LiveClient.post takes a `json` argument, as the test client does
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flask_tasks import db
from flask_tasks.config import PROJECT_DIR, load_settings
from flask_tasks.registry import Registry
from flask_tasks.web import create_app
from tests.conftest import Processes, query, wait_for

VENV_BIN = os.path.dirname(sys.executable)  # where flask and gunicorn live


def app_with(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], registry: Registry):
    """The app of a server with this environment (the test's database, and settings of the test's own)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(db, "_resolved_url", None)  # the process-wide URL cache: this test's database
    return create_app(load_settings(), registry)


def private_pem() -> str:
    """A new RSA key for signing tokens, as PEM text."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode()


def add_client(env: dict[str, str], name: str, tasks: str = "") -> str:
    """`flask --app app clients add NAME --tasks ...`, as an operator adds a client; its secret."""
    done = subprocess.run(
        [f"{VENV_BIN}/flask", "--app", "app", "clients", "add", name, "--tasks", tasks],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    return lines["client_secret"]


def http(method: str, url: str, body: object = None, token: str | None = None) -> tuple[int, dict]:
    """(status, JSON answer) of one request."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def start_web(processes: Processes, port: int, env: dict[str, str]):
    """gunicorn serving the app on 127.0.0.1:port, once it answers."""
    proc = processes.start(
        f"{VENV_BIN}/gunicorn", "app:app", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", **env
    )
    wait_for(lambda: _answers(f"http://127.0.0.1:{port}/tasks") or proc.poll() is not None, timeout=30)
    assert proc.poll() is None, processes.output(proc)
    return proc


def _answers(url: str) -> bool:
    try:
        return http("GET", url)[0] == 200
    except OSError:
        return False


def in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run work(0..count-1) in as many threads, started together; re-raise the first failure."""
    barrier, failures = threading.Barrier(count), []

    def run(n: int) -> None:
        try:
            barrier.wait()
            work(n)
        except BaseException as err:  # noqa: BLE001 (reported below)
            failures.append(err)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if failures:
        raise failures[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """tests/receiver.py as a real process on a loopback port; `requests` reads what it got."""

    def __init__(self, processes: Processes, tmp_path: Path, *options: str, port: int | None = None) -> None:
        self.processes, self.options = processes, options
        self.port = port or free_port()
        self.log = tmp_path / f"receiver-{self.port}.jsonl"
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.start()

    def start(self, *options: str) -> None:
        self.proc = self.processes.start("tests/receiver.py", str(self.port), str(self.log), *(options or self.options))
        wait_for(lambda: "listening" in self.processes.output(self.proc), timeout=10)

    def requests(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


@dataclass
class Pair:
    """Server A, whose PEERS names server B; B has a client `a` for A, and calls A back."""

    processes: Processes
    env_a: dict[str, str]
    env_b: dict[str, str]
    port_a: int
    port_b: int
    b_procs: list = field(default_factory=list)

    @property
    def a(self) -> str:
        return f"http://127.0.0.1:{self.port_a}"

    @property
    def b(self) -> str:
        return f"http://127.0.0.1:{self.port_b}"

    def start_a(self, **env: str) -> None:
        start_web(self.processes, self.port_a, {**self.env_a, **env})
        self.processes.start("handler.py", **{**self.env_a, **env})

    def start_b(self, **env: str) -> None:
        self.b_procs.append(start_web(self.processes, self.port_b, {**self.env_b, **env}))
        self.b_procs.append(self.processes.start("handler.py", **{**self.env_b, **env}))

    def task_a(self, task_id: str) -> dict:
        return http("GET", f"{self.a}/task/{task_id}")[1]

    def ended_a(self, task_id: str) -> dict | None:
        task = self.task_a(task_id)
        return task if task["status"] in ("done", "failed", "cancelled") else None

    def tasks_b(self) -> list[tuple]:
        conn = db.connect(self.env_b["DATABASE_URL"], "flask-tasks tests")
        try:
            return query(conn, "SELECT idempotency_key, status, attempts FROM tasks")
        finally:
            conn.close()


class LiveAnswer(NamedTuple):
    status_code: int
    body: bytes

    def get_json(self) -> object:
        return json.loads(self.body)


class LiveClient:
    """A server running on a port, asked as Flask's test client is: get and post, status_code, get_json()."""

    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str) -> LiveAnswer:
        return self._send("GET", path, None, {})

    def post(self, path: str, json: object = None, data: bytes | None = None, headers: dict | None = None):
        if json is not None:
            data = _json.dumps(json).encode()
        return self._send("POST", path, data, {"Content-Type": "application/json", **(headers or {})})

    def _send(self, method: str, path: str, data: bytes | None, headers: dict) -> LiveAnswer:
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return LiveAnswer(response.status, response.read())
        except urllib.error.HTTPError as err:
            return LiveAnswer(err.code, err.read())
