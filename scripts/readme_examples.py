"""Re-run the README's curl examples against a fresh server and write their real responses back.

    .venv/bin/python scripts/readme_examples.py

It makes a JWT key pair and a webhook secret, starts `honcho start` on port 5000 with a new
embedded database, that key and that secret, and examples/webhook_receiver.py on port 8000
(writing to RECEIVED), runs every `$ ...` line of the README in order in the project
folder (ids and client secrets from earlier answers are carried into later commands;
shell variables set by one command are seen by the next), replaces the recorded
answer under each with the new one, and stops the server. Review the diff before
committing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from flask_tasks.webhooks import generate_secret  # noqa: E402 - after the project is on the path

README = ROOT / "README.md"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SECRET = re.compile(r"(?<=client_secret: )[A-Za-z0-9_-]{43}")
CARRIED = re.compile(f"{UUID.pattern}|[A-Za-z0-9_-]{{43}}")
PAUSE = 1.5  # seconds before each command, so handlers have run what came before
RECEIVED = Path("/tmp/flask-tasks-received.jsonl")  # what the README's notify_url receiver got


def environment(data_dir: str) -> dict[str, str]:
    """The server's and the commands' environment: a fresh embedded database, a new key, no .env."""
    bin_dir = os.path.dirname(sys.executable)
    key = Path(data_dir) / "jwt-private.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "EMBEDDED_PG_DIR": str(Path(data_dir) / "pgdata")}
    # The README's CORS example is for this frontend.
    env.update(FLASK_TASKS_ENV_FILE="", JWT_PRIVATE_KEY_FILE=str(key), FRONTEND_URL="https://app.example.com")
    # notify_url examples call the receiver on 127.0.0.1, which only NOTIFY_ALLOW_PRIVATE allows.
    env.update(WEBHOOK_SECRET=generate_secret(), NOTIFY_ALLOW_PRIVATE="true")
    env.pop("DATABASE_URL", None)
    return env


def start_receiver(env: dict[str, str]) -> subprocess.Popen:
    RECEIVED.unlink(missing_ok=True)
    command = [sys.executable, "examples/webhook_receiver.py", "8000", str(RECEIVED)]
    return subprocess.Popen(command, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)})


def start_server(env: dict[str, str]) -> subprocess.Popen:
    bin_dir = os.path.dirname(sys.executable)
    command = [f"{bin_dir}/honcho", "start", "-p", "5000"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            urllib.request.urlopen("http://localhost:5000/tasks", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    server.send_signal(signal.SIGINT)
    raise SystemExit("the server did not start")


def run(command: str, env: dict[str, str], state: Path) -> str:
    """Run a command in bash with the variables earlier commands set; its output (stdout and stderr)."""
    script = f"set -a; source {state} 2>/dev/null; {command}\nexport -p > {state}"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, env=env)
    return done.stdout + done.stderr


def refresh(lines: list[str], env: dict[str, str], state: Path) -> list[str]:
    """The README's lines with each example's answer replaced by a real one."""
    ids: dict[str, str] = {}  # id or secret in the README -> the one the server gave this time
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if not line.startswith("$ "):
            continue
        recorded = []
        while i < len(lines) and lines[i].strip() and not lines[i].startswith(("$ ", "```")):
            recorded.append(lines[i])
            i += 1
        command = CARRIED.sub(lambda m: ids.get(m.group(0), m.group(0)), line[2:])
        time.sleep(PAUSE)
        answer = run(command, env, state)
        for pattern in (UUID, SECRET):
            for old, new in zip(pattern.findall("".join(recorded)), pattern.findall(answer), strict=False):
                ids.setdefault(old, new)
        out[-1] = "$ " + command
        if answer.strip():  # a command that prints nothing (a variable set) gets no answer line
            out.extend(answer.rstrip("\n").split("\n"))
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="readme-pg-") as data_dir:
        env = environment(data_dir)
        receiver = start_receiver(env)
        server = start_server(env)
        try:
            lines = README.read_text().split("\n")
            README.write_text("\n".join(refresh(lines, env, Path(data_dir) / "state.sh")))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=15)
            receiver.terminate()


if __name__ == "__main__":
    main()
