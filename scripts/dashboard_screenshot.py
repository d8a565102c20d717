"""Take the README's screenshot of the dashboard under load: docs/dashboard.png.

    .venv/bin/python scripts/dashboard_screenshot.py [--minutes 5] [--output docs/dashboard.png]

It starts a fresh embedded database, gunicorn, a janitor and handlers (none of them runs `mov3d`, so
the page has a task type no live handler serves), posts a varying load of quick tasks (some fail) for
`--minutes` minutes, keeps three `crawl` tasks reporting their progress, then opens /dashboard in
headless Chromium (Debian's package, driven by Playwright) and saves a full-page screenshot. Everything
stays on loopback; every process it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base: str, body: object) -> object:
    request = urllib.request.Request(
        f"{base}/task", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


class Server:
    """The processes of one server, all stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, []

    def start(self, *command: str) -> subprocess.Popen:
        log = (self.logs / f"{Path(command[0]).stem}-{len(self.procs)}.log").open("w")
        argv = [sys.executable, *command] if command[0].endswith(".py") else list(command)
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):  # the web and the database's first user last
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def load(base: str, seconds: float, stop: threading.Event) -> None:
    """A load that rises and falls: bulk posts of quick tasks (a `flaky` one that fails both attempts ends failed)."""
    started = time.monotonic()
    while not stop.is_set() and time.monotonic() - started < seconds:
        phase = (time.monotonic() - started) / 90.0
        rate = 30 + 25 * math.sin(2 * math.pi * phase)  # tasks a second
        batch = [{"type": "flaky", "args": {"fail_rate": 0.3, "seconds": 0.02}} for _ in range(int(rate * 0.35))]
        batch += [{"type": "add", "args": {"x": 2, "y": 3}} for _ in range(int(rate * 0.15))]
        if batch:
            post(base, batch)
        stop.wait(0.5)


def crawls(base: str, stop: threading.Event) -> None:
    """Three crawl tasks at a time, each taking a minute or two, so progress bars show at every moment."""
    running: list[str] = []
    while not stop.is_set():
        running = [task_id for task_id in running if status(base, task_id) in ("waiting", "running")]
        while len(running) < 3:
            steps = 400 + 200 * len(running)
            running.append(post(base, {"type": "crawl", "args": {"steps": steps, "pause": 0.2}})["id"])  # type: ignore[index]
        stop.wait(2)


def status(base: str, task_id: str) -> str:
    with urllib.request.urlopen(f"{base}/task/{task_id}", timeout=10) as response:
        return json.load(response)["status"]


def screenshot(base: str, output: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory(prefix="dashboard-chromium-") as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
            color_scheme="light",
        )
        try:
            page = browser.new_page()
            page.goto(f"{base}/dashboard")
            expect(page.locator("#running tbody progress").first).to_be_visible(timeout=30_000)
            page.select_option("#filters select[name=limit]", "20")  # a page that fits the picture
            page.click("#filters button[type=submit]")
            page.wait_for_timeout(4000)  # one more refresh: every section filled
            page.evaluate("window.scrollTo(0, 0)")  # the sticky header where it belongs in a full-page picture
            page.screenshot(path=str(output), full_page=True)
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="minutes of load before the screenshot")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dashboard-shot-") as data_dir:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PG", "OPERATOR_"))}
        env.update(
            FLASK_TASKS_ENV_FILE="",
            EMBEDDED_PG_DIR=str(Path(data_dir) / "pgdata"),
            TASKS_MODULE="tasks,tests.dashboard_tasks",
            STATS_INTERVAL="1",
            GUNICORN_WORKERS="2",
            GUNICORN_THREADS="4",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        server = Server(env, Path(data_dir))
        stop = threading.Event()
        try:
            server.start(f"{BIN}/gunicorn", "app:app", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}")
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"{base}/tasks", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise SystemExit(f"the server did not start: see {data_dir}")
            server.start("janitor.py")
            for _ in range(2):
                server.start("handler.py", "--exclude-tasks", "crawl,mov3d")
            for _ in range(3):
                server.start("handler.py", "--tasks", "crawl")
            # Tasks no handler runs: they wait, and the oldest waiting task ages.
            mov3d = {"dt": 0.01, "r0": [0, 0, 1], "v0": [1, 0, 5], "mass": 0.1, "radius": 0.05}
            post(base, [{"type": "mov3d", "args": mov3d} for _ in range(12)])
            threads = [
                threading.Thread(target=load, args=(base, args.minutes * 60, stop), daemon=True),
                threading.Thread(target=crawls, args=(base, stop), daemon=True),
            ]
            for thread in threads:
                thread.start()
            print(f"load for {args.minutes} minutes on {base}/dashboard ...", flush=True)
            threads[0].join()
            screenshot(base, args.output)
            print(f"saved {args.output}")
        finally:
            stop.set()
            server.stop()


if __name__ == "__main__":
    main()
