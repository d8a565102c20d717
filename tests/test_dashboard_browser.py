"""The dashboard in a real browser: headless Chromium (Debian's `chromium` package) driven by Playwright's
Python package, against gunicorn and real handler processes started by the test.

The page must load with no console error and no request to another host, show a task the test posts,
move a running task's progress bar, cancel a running task with its button and retry a failed one with
its button. Without Chromium (or Playwright) the test is skipped and says why; `.ci/run` installs both.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit

import pytest

from tests.conftest import wait_for
from tests.helpers import LiveClient, free_port, start_web

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# No network of its own: no first-run pages, updates, sync or QUIC probes, so every request is the page's.
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
# The web process and the handlers load the dashboard's test tasks: crawl (progress), fail_once, hello.
ENV = {
    "TASKS_MODULE": "tests.dashboard_tasks",
    "GUNICORN_WORKERS": "1",
    "GUNICORN_THREADS": "4",
    "STATS_INTERVAL": "0.5",
    "LOG_LEVEL": "WARNING",
}
WAIT_MS = 20_000  # for the page to show something: a few refreshes (every 3 s) and a task's run


def chromium_or_skip():
    """Playwright's sync API, or a skip that says what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright's Python package is not installed: pip install -r requirements-dev.txt")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM to its path)")
    return sync_playwright


def task_status(api: LiveClient, task_id: str) -> str:
    r = api.get(f"/task/{task_id}")
    assert r.status_code == 200, r.body
    return r.get_json()["status"]


def post(api: LiveClient, body: dict) -> str:
    r = api.post("/task", json=body)
    assert r.status_code == 201, r.body
    return r.get_json()["id"]


def test_the_dashboard_in_a_browser(processes, tmp_path):
    sync_playwright = chromium_or_skip()
    from playwright.sync_api import expect

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start_web(processes, port, ENV)
    # One handler for the long task, one for the rest: a handler runs one task at a time.
    processes.start("handler.py", "--tasks", "crawl", **ENV)
    processes.start("handler.py", "--exclude-tasks", "crawl", **ENV)
    api = LiveClient(base)

    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile: nothing cached, no credentials
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
            page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))

            page.goto(f"{base}/dashboard")
            expect(page.locator("#updated")).to_contain_text("updated", timeout=WAIT_MS)
            expect(page.locator("#workers tbody tr[data-id]")).to_have_count(2, timeout=WAIT_MS)

            # A task the test posts shows in the task table, and its outcome once a handler ran it.
            hello = post(api, {"type": "hello", "args": {"name": "browser"}})
            row = page.locator(f'#tasks tr[data-id="{hello}"]')
            expect(row).to_have_attribute("data-status", "done", timeout=WAIT_MS)
            expect(row).to_contain_text("hello browser")

            # A running task's progress bar moves, without the page being loaded again.
            crawl = post(api, {"type": "crawl", "args": {"steps": 300, "pause": 0.1}})
            bar = page.locator(f'#running tr[data-id="{crawl}"] progress')
            expect(bar).to_be_visible(timeout=WAIT_MS)
            first = float(bar.get_attribute("value") or 0)
            page.wait_for_function(
                """([id, before]) => {
                    const bar = document.querySelector(`#running tr[data-id="${id}"] progress`);
                    return bar !== null && bar.value > before;
                }""",
                arg=[crawl, first],
                timeout=WAIT_MS,
            )
            assert task_status(api, crawl) == "running"

            # Its cancel button cancels it.
            page.locator(f'#running tr[data-id="{crawl}"] button[data-action="cancel"]').click()
            wait_for(lambda: task_status(api, crawl) == "cancelled", timeout=20)
            expect(page.locator(f'#tasks tr[data-id="{crawl}"]')).to_have_attribute(
                "data-status", "cancelled", timeout=WAIT_MS
            )
            expect(page.locator(f'#running tr[data-id="{crawl}"]')).to_have_count(0, timeout=WAIT_MS)

            # A failed task shows with its error; its retry button runs it again (and this time it succeeds).
            flaky = post(api, {"type": "fail_once", "args": {"key": f"browser-{uuid.uuid4()}"}})
            failure = page.locator(f'#failures tr[data-id="{flaky}"]')
            expect(failure).to_contain_text("the upstream service refused", timeout=WAIT_MS)
            failure.locator('button[data-action="retry"]').click()
            wait_for(lambda: task_status(api, flaky) == "done", timeout=20)
            expect(page.locator(f'#tasks tr[data-id="{flaky}"]')).to_have_attribute(
                "data-status", "done", timeout=WAIT_MS
            )
            expect(failure).to_have_count(0, timeout=WAIT_MS)
            expect(page.locator("#problem")).to_be_hidden()
        finally:
            browser.close()

    assert problems == []
    hosts = {urlsplit(url).netloc for url in requests}
    assert hosts == {f"127.0.0.1:{port}"}, sorted(set(requests))
    paths = {urlsplit(url).path for url in requests}
    assert {"/dashboard", "/stats", "/task", "/static/dashboard/dashboard.js"} <= paths
