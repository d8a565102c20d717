"""GET /stats, GET /workers and GET /dashboard over HTTP: what they answer with real handler and janitor
processes, that every answer is the one the API document describes, that only operators get them, and
that the page loads nothing but its own files. The page in a real browser: tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import base64
import signal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from flask_tasks.web import dashboard_routes
from tests.conftest import enqueue, wait_for
from tests.helpers import app_with
from tests.test_openapi import assert_documented, get_document

# Counts older than 3 × 0.1 s are recounted on the next GET /stats: a test sees its tasks at once.
FAST_COUNTS = {"STATS_INTERVAL": "0.1"}
PASSWORD = "correct horse battery staple"


@pytest.fixture
def fast_client(base_env, registry, monkeypatch):
    return app_with(monkeypatch, {**base_env, **FAST_COUNTS}, registry).test_client()


def basic(password: str, user: str = "ops") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def get_stats(client) -> dict:
    r = client.get("/stats")
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json


def test_stats_counts_tasks_then_what_the_handlers_did(fast_client, conn, processes, registry):
    document = get_document(fast_client)
    for _ in range(3):
        enqueue(conn, "add", {"x": 1, "y": 2})
    enqueue(conn, "boom", {"message": "it broke"})

    r = fast_client.get("/stats")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert_documented(document, "GET", "/stats", r)
    stats = r.json
    assert stats["statuses"] == {"waiting": 4, "running": 0, "done": 0, "failed": 0, "cancelled": 0}
    assert stats["types"]["add"]["waiting"] == 3 and stats["types"]["boom"]["waiting"] == 1
    assert stats["oldest_waiting_seconds"] is not None and stats["oldest_waiting_seconds"] >= 0
    assert stats["taken"] is not None
    assert len(stats["throughput"]) == 60
    assert sum(m["done"] + m["failed"] for m in stats["throughput"]) == 0
    assert stats["workers"] == []
    assert stats["unserved_types"] == registry.names()  # nobody runs anything yet

    handler = processes.start("handler.py")
    stats = wait_for(lambda: (s := get_stats(fast_client))["statuses"]["done"] == 3 and s, timeout=30)
    assert stats["statuses"]["failed"] == 1 and stats["statuses"]["waiting"] == 0
    assert stats["types"]["add"]["done"] == 3 and stats["types"]["boom"]["failed"] == 1
    assert stats["oldest_waiting_seconds"] is None

    # The per-minute counts arrive with the handler's next heartbeat.
    # (Summed: the run may straddle a minute.)
    def per_minute() -> dict | None:
        stats = get_stats(fast_client)
        minutes = stats["throughput"]
        return stats if sum(m["done"] for m in minutes) == 3 and sum(m["failed"] for m in minutes) == 1 else None

    stats = wait_for(per_minute, timeout=30)
    minutes = stats["throughput"]
    assert [m["minute"] for m in minutes] == sorted(m["minute"] for m in minutes)
    assert all(b["minute"] - a["minute"] == 60 for a, b in zip(minutes, minutes[1:], strict=False))
    (worker,) = stats["workers"]
    assert worker["pid"] == handler.pid and worker["kind"] == "handler" and worker["alive"]
    assert "add" in worker["task_types"]
    assert stats["unserved_types"] == []
    assert_documented(document, "GET", "/stats", fast_client.get("/stats"))


def test_stats_names_the_task_types_no_live_handler_serves(fast_client, processes, registry):
    processes.start("handler.py", "--tasks", "add,echo")
    stats = wait_for(lambda: (s := get_stats(fast_client))["workers"] and s, timeout=30)
    assert "add" not in stats["unserved_types"] and "echo" not in stats["unserved_types"]
    assert stats["unserved_types"] == [name for name in registry.names() if name not in ("add", "echo")]


def workers_of(client, query: str = "") -> list[dict]:
    r = client.get(f"/workers{query}")
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json["workers"]


def test_workers_lists_handlers_and_janitors_alive_then_gone(client, processes, settings):
    document = get_document(client)
    handler = processes.start("handler.py")
    janitor = processes.start("janitor.py")
    alive = wait_for(lambda: len(w := workers_of(client)) == 2 and w, timeout=30)
    assert_documented(document, "GET", "/workers", client.get("/workers"))
    by_kind = {w["kind"]: w for w in alive}
    assert by_kind["handler"]["pid"] == handler.pid and by_kind["janitor"]["pid"] == janitor.pid
    for worker in alive:
        assert worker["alive"] is True and worker["stopped"] is None
        assert 0 <= worker["heartbeat_age"] < settings.lease_seconds
        assert worker["started"] <= worker["heartbeat"]
        assert worker["tasks_done"] == 0 and worker["tasks_failed"] == 0
    assert "add" in by_kind["handler"]["task_types"]

    handler.send_signal(signal.SIGTERM)
    handler.wait(timeout=15)
    wait_for(lambda: [w["kind"] for w in workers_of(client)] == ["janitor"], timeout=15)
    everyone = workers_of(client, "?gone=true")
    assert [w["kind"] for w in everyone] == ["janitor", "handler"]  # alive first
    gone = everyone[1]
    assert gone["pid"] == handler.pid and gone["alive"] is False and gone["stopped"] is not None
    assert [w["kind"] for w in workers_of(client, "?gone=false")] == ["janitor"]
    r = client.get("/workers?gone=true")
    assert_documented(document, "GET", "/workers", r)


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/workers?gone=maybe", "gone"),
        ("/workers?gone=", "gone"),
        ("/workers?alive=true", "alive"),
        ("/stats?type=add", "type"),
        ("/dashboard?refresh=1", "refresh"),
    ],
)
def test_a_bad_query_parameter_is_a_400_naming_it(client, path, named):
    r = client.get(path)
    assert r.status_code == 400
    assert named in r.json["message"]
    assert_documented(get_document(client), "GET", path.split("?")[0], r)


@pytest.fixture
def guarded_client(base_env, registry, monkeypatch):
    """A server with OPERATOR_PASSWORD: loopback alone no longer makes an operator."""
    return app_with(monkeypatch, {**base_env, "OPERATOR_PASSWORD": PASSWORD}, registry).test_client()


@pytest.mark.parametrize("path", ["/stats", "/workers", "/dashboard"])
def test_only_operators_get_the_dashboard_and_its_data(guarded_client, path):
    document = get_document(guarded_client)
    for headers in ({}, basic("wrong password")):
        r = guarded_client.get(path, headers=headers)
        assert r.status_code == 401, r.get_data(as_text=True)
        challenges = r.headers.getlist("WWW-Authenticate")
        assert 'Basic realm="flask-tasks"' in challenges, challenges  # so the browser asks for the password
        assert_documented(document, "GET", path, r)
    r = guarded_client.get(path, headers=basic(PASSWORD))
    assert r.status_code == 200
    assert_documented(document, "GET", path, r)


@pytest.mark.parametrize("path", ["/stats", "/workers", "/dashboard"])
def test_without_a_password_only_loopback_is_an_operator(client, path):
    assert client.get(path).status_code == 200  # the test client comes from 127.0.0.1
    r = client.get(path, environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert r.status_code in (401, 403)
    r = client.get(path, headers={"X-Forwarded-For": "203.0.113.7"})  # a proxy on this host: not loopback
    assert r.status_code in (401, 403)


class PageParser(HTMLParser):
    """The URLs a page loads, and anything inline (script, style, event handler) a strict CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self.body: dict[str, str | None] = {}
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "body":
            self.body = found
        for name in ("src", "href"):
            if found.get(name) and tag in ("script", "link", "img"):
                self.urls.append(found[name] or "")
        if tag == "style" or "style" in found:
            self.inline.append(f"<{tag} style>")
        self.inline.extend(f"<{tag} {name}>" for name in found if name.startswith("on"))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script> {data.strip()[:40]}")


CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".svg": ("image/svg+xml",),
}


def test_the_page_loads_only_its_own_files(client):
    r = client.get("/dashboard")
    assert r.status_code == 200 and r.mimetype == "text/html"
    policy = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "style-src 'self'" in policy
    assert r.headers["Cache-Control"] == "no-store"
    page = PageParser()
    page.feed(r.get_data(as_text=True))
    assert page.inline == []
    assert page.body["data-root"] == "" and int(page.body["data-refresh"] or 0) > 0
    assert "{{" not in r.get_data(as_text=True)  # every placeholder filled
    names = set()
    for url in page.urls:
        assert url.startswith("/static/dashboard/"), url  # this server, not a CDN
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.mimetype in CONTENT_TYPES[Path(url).suffix], (url, asset.mimetype)
        names.add(Path(url).name)
        asset.close()
    assert names == {"dashboard.js", "dashboard.css", "favicon.svg"}
    # The script talks to this server only: the one URL in it is SVG's namespace, which is no request.
    script = (dashboard_routes.ASSETS_DIR / "dashboard.js").read_text()
    assert set(part.split('"')[0] for part in script.split("http")[1:]) == {"://www.w3.org/2000/svg"}
    assert "innerHTML =" not in script  # what tasks and clients wrote goes in as text, never as markup


def test_the_page_follows_a_prefix_the_app_is_mounted_under(client):
    r = client.get("/dashboard", base_url="http://localhost/queue")
    assert r.status_code == 200
    page = PageParser()
    page.feed(r.get_data(as_text=True))
    assert page.body["data-root"] == "/queue"
    assert all(url.startswith("/queue/static/dashboard/") for url in page.urls), page.urls


def test_the_document_describes_the_operator_routes(client):
    document = get_document(client)
    for path in ("/stats", "/workers", "/dashboard"):
        operation = document["paths"][path]["get"]
        assert operation["tags"] == ["dashboard"]
        assert {"200", "401", "403", "503"} <= set(operation["responses"])
    assert "dashboard" in [tag["name"] for tag in document["tags"]]
    stats = document["components"]["schemas"]["QueueStats"]
    assert set(stats["required"]) == {
        "taken",
        "statuses",
        "types",
        "oldest_waiting_seconds",
        "throughput",
        "workers",
        "unserved_types",
    }
