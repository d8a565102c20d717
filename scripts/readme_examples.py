"""Re-run the README's curl examples against a fresh server and write their real responses back.

    .venv/bin/python scripts/readme_examples.py

It starts `honcho start` on port 5000 with a new embedded database, runs every
`$ curl ...` line of the README in order (ids from earlier answers are carried
into later commands), replaces the recorded answer under each with the new one,
and stops the server. Review the diff before committing.
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
README = ROOT / "README.md"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PAUSE = 1.5  # seconds before each command, so handlers have run what came before


def start_server(data_dir: str) -> subprocess.Popen:
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "EMBEDDED_PG_DIR": data_dir}
    env.pop("DATABASE_URL", None)
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


def refresh(lines: list[str]) -> list[str]:
    """The README's lines with each example's answer replaced by a real one."""
    ids: dict[str, str] = {}  # id in the README -> id the server gave this time
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if not line.startswith("$ curl"):
            continue
        recorded = []
        while i < len(lines) and lines[i].strip() and not lines[i].startswith(("$ ", "```")):
            recorded.append(lines[i])
            i += 1
        command = UUID.sub(lambda m: ids.get(m.group(0), m.group(0)), line[2:])
        time.sleep(PAUSE)
        answer = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=ROOT).stdout
        for old, new in zip(UUID.findall("".join(recorded)), UUID.findall(answer), strict=False):
            ids.setdefault(old, new)
        out[-1] = "$ " + command
        out.extend(answer.rstrip("\n").split("\n"))
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="readme-pg-") as data_dir:
        server = start_server(str(Path(data_dir) / "pgdata"))
        try:
            lines = README.read_text().split("\n")
            README.write_text("\n".join(refresh(lines)))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
