"""Fuzzing: schemathesis against a real gunicorn server, from the /openapi.json that server serves.

Every response must be no 5xx and must conform to the document: a documented status, content type,
headers and body. Schemathesis runs its CLI in a subprocess (examples, coverage, fuzzing and stateful
phases, with a fixed seed); its HAR report counts the requests it made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import wait_for
from tests.helpers import add_client, free_port, private_pem
from tests.test_e2e import reachable

VENV_BIN = os.path.dirname(sys.executable)
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
]
SEED = 20261123
# Test cases per operation and phase; FUZZ_MAX_EXAMPLES=1000 fuzzes deeper (some minutes).
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))
MIN_REQUESTS = 1000
TIME_LIMIT = 180 + 2 * MAX_EXAMPLES  # seconds for the schemathesis run; with 100, it takes under a minute on 2 cores
CLIENT = "fuzzer"


def get_token(base: str, client_id: str, secret: str) -> str:
    body = json.dumps({"client_id": client_id, "client_secret": secret}).encode()
    request = urllib.request.Request(f"{base}/token", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


def schemathesis_config(path: Path, token: str) -> Path:
    """A bearer token for the operations that take one; POST /token gets made-up credentials."""
    path.write_text(f'[auth.openapi.bearerAuth]\nbearer = "{token}"\n')
    return path


def test_fuzz_the_running_server(processes, tmp_path: Path, report):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **processes.env,
        "TASKS_MODULE": "tasks",  # the shipped task types, the document users see
        "JWT_PRIVATE_PEM": private_pem(),
        "GUNICORN_WORKERS": "2",
        "LOG_LEVEL": "WARNING",
    }
    server = processes.start(
        f"{VENV_BIN}/gunicorn", "app:app", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", **env
    )
    wait_for(lambda: reachable(f"{base}/tasks"), timeout=30)
    secret = add_client(env, CLIENT, "multiply")
    token = get_token(base, CLIENT, secret)
    config = schemathesis_config(tmp_path / "schemathesis.toml", token)

    har, json_report = tmp_path / "requests.har", tmp_path / "report.json"
    command = [
        f"{VENV_BIN}/st",
        "--config-file",
        str(config),
        "run",
        f"{base}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",  # and so no example database
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report",
        "har,json",
        "--report-har-path",
        str(har),
        "--report-json-path",
        str(json_report),
        "--no-color",
    ]
    started = time.monotonic()
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=TIME_LIMIT, env={**os.environ, "NO_COLOR": "1"}
    )
    seconds = time.monotonic() - started
    output = run.stdout + run.stderr
    (tmp_path / "schemathesis.log").write_text(output)
    assert har.exists() and json_report.exists(), output[-5000:]

    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = [entry["response"]["status"] for entry in entries]
    summary = json.loads(json_report.read_text())
    report("requests", len(entries))
    report("seconds", f"{seconds:.1f}")
    report("test cases", summary["test_cases"]["generated"])
    report("responses by status", dict(sorted({s: statuses.count(s) for s in set(statuses)}.items())))

    server_errors = [
        f"{entry['request']['method']} {entry['request']['url']} {entry['request'].get('postData', {}).get('text', '')}"
        f" -> {entry['response']['status']} {entry['response']['content'].get('text', '')}"
        for entry in entries
        if entry["response"]["status"] >= 500
    ]
    assert server_errors == [], server_errors[:10]
    assert summary["failures"] == [], output[-20000:]
    assert summary["errors"] == [], output[-20000:]
    assert run.returncode == 0, output[-20000:]
    assert summary["operations"]["tested"] == summary["operations"]["total"], summary["operations"]
    assert len(entries) >= MIN_REQUESTS
    assert "Traceback" not in processes.output(server)
