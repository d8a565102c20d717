"""Peer servers: a task posted with "peer" is sent to that flask-tasks server, followed there, and ended here.

A handler sends it to the peer's POST /task with a token from the peer's POST /token, our task id as
the idempotency key (a send retried after any failure never makes a second task there) and a
notify_url back to this server's /peer/<name>/callback. The peer's signed callback ends the task here
(`settle`); if none comes within PEER_CHECK_INTERVAL, the handler asks the peer's GET /task/<id>.
A cancel here is passed on to the peer. Nothing is lost when a handler dies: the rows a round works
on are locked by its transaction, and the lock ends with the connection.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg2.extensions

from flask_tasks import db, shape
from flask_tasks.config import Peer, Settings
from flask_tasks.stopping import one_line

log = logging.getLogger("flask_tasks.peers")

ROUND = 8  # tasks one round sends or asks about, at once
LONGEST_RETRY = 300.0  # seconds: the cap on the wait before the next try to reach a peer
ANSWER_LIMIT = 1024 * 1024  # bytes read of a peer's answer


class PeerError(Exception):
    """The peer could not be reached, or answered something unusable: try again later."""


def call(peer: Peer, method: str, path: str, timeout: float, body: Any = None, token: str | None = None) -> Any:
    """(status, JSON answer) of one request to a peer; PeerError when it cannot be had.

    Peers come from the operator's configuration, not from clients: no SSRF guard here.
    """
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    else:
        basic = base64.b64encode(f"{peer.client_id}:{peer.client_secret}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(peer.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, raw = answer.status, answer.read(ANSWER_LIMIT)
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read(ANSWER_LIMIT)
    except (OSError, ValueError) as err:  # refused, reset, timed out, a bad URL
        reason = getattr(err, "reason", None) or err
        raise PeerError(f"peer {peer.name} unreachable: {one_line(reason)}") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        raise PeerError(f"peer {peer.name} answered HTTP {status} that is not JSON") from None


def message_of(answer: Any) -> str:
    return str(answer.get("message", answer)) if isinstance(answer, dict) else str(answer)


def outcome(task: dict[str, Any]) -> dict[str, Any] | None:
    """The settle_peer_task parameters for a task as a peer shows it, if it has ended there."""
    if not isinstance(task, dict) or task.get("status") not in shape.FINAL:
        return None
    error = task.get("error")
    return {
        "status": task["status"],
        "result": json.dumps(task.get("result")),
        "error": json.dumps(error) if isinstance(error, dict) else None,
        "peer_task_id": str(task.get("id")),
    }


def settle(conn: psycopg2.extensions.connection, settings: Settings, peer: str, task_id: str, ended: dict) -> bool:
    """End a task its peer ran; False if it had ended already (this is a second word of the same end)."""
    params = {"id": task_id, "peer": peer, "keep": settings.max_task_time, **ended}
    return bool(db.run(conn, "settle_peer_task", params))


class PeerLink:
    """In a handler process: a thread that sends tasks to their peers and follows them there."""

    def __init__(self, settings: Settings, process: str, stopping: threading.Event) -> None:
        self.settings = settings
        self.process = process
        self.stopping = stopping
        self.db = db.OwnConnection(settings, process, db.HANDLER_OPTIONS)
        self.tokens: dict[str, tuple[str, float]] = {}  # peer name -> (token, when to get a new one)
        self.calls = ThreadPoolExecutor(ROUND, thread_name_prefix="peer")

    def start(self) -> None:
        if self.settings.peers:
            threading.Thread(target=self._loop, name="peers", daemon=True).start()

    def _loop(self) -> None:
        backoff = db.Backoff()
        while not self.stopping.is_set():
            try:
                if self._round() < ROUND:
                    self.stopping.wait(self.settings.poll_interval)
                backoff.reset()
            except Exception as err:  # this thread must outlive any error, or peer tasks stop moving
                log.warning("%s: peer link error, retrying: %s", self.process, one_line(err))
                self.db.drop()
                time.sleep(backoff.next())

    def _round(self) -> int:
        """Lock the due peer tasks, talk to their peers at once, write what came of it; how many there were."""
        conn = self.db.get()
        with conn:  # one transaction: the locks last while the peers are asked
            tasks = db.run_dicts(conn, "due_peer_tasks", {"limit": ROUND})
            for task, (statement, params) in zip(tasks, self.calls.map(self._follow, tasks), strict=True):
                db.run(conn, statement, {"id": task["id"], **params})
        return len(tasks)

    def _follow(self, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """What to write after sending a waiting task, or asking about (or cancelling) a running one."""
        peer = self.settings.peers.get(task["peer"])
        if peer is None:
            return self._ended(task, shape.FAILED, f"peer [{task['peer']}] is no longer in PEERS")
        try:
            if task["status"] == shape.WAITING:
                return self._send(peer, task)
            if task["cancel_requested"]:
                self._call(peer, "POST", f"/task/{task['peer_task_id']}/cancel")
            status, answer = self._call(peer, "GET", f"/task/{task['peer_task_id']}")
        except PeerError as err:
            retry_in = db.retry_delay(task["attempts"] + 1, self.settings.retry_backoff, LONGEST_RETRY)
            log.warning("%s: task %s: %s; again in %.1f s", self.process, task["id"], err, retry_in)
            return "peer_task_retry", {"message": str(err), "retry_in": retry_in}
        if status == 404:
            return self._ended(task, shape.FAILED, f"peer {peer.name} no longer has the task (expired there?)")
        ended = outcome(answer) if status == 200 else None
        if ended is not None:
            return "settle_peer_task", {"peer": peer.name, "keep": self.settings.max_task_time, **ended}
        return self._sent(task, task["peer_task_id"])

    def _send(self, peer: Peer, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        body = {"type": task["type"], "args": task["args"], "idempotency_key": task["id"]}
        body |= {"max_attempts": task["max_attempts"], "priority": task["priority"]}
        body["notify_url"] = f"{self.settings.public_url}/peer/{peer.name}/callback"
        if task["timeout"] is not None:
            body["timeout"] = task["timeout"]
        status, answer = self._call(peer, "POST", "/task", body)
        if status in (200, 201) and isinstance(answer, dict) and "id" in answer:
            log.info("%s: task %s sent to peer %s as %s", self.process, task["id"], peer.name, answer["id"])
            ended = outcome(answer)  # sent before, and ended there already
            if ended is not None:
                return "settle_peer_task", {"peer": peer.name, "keep": self.settings.max_task_time, **ended}
            return self._sent(task, str(answer["id"]))
        if 400 <= status < 500 and status not in (408, 429):
            return self._ended(task, shape.FAILED, f"peer {peer.name} refused the task: {message_of(answer)}")
        raise PeerError(f"peer {peer.name} answered HTTP {status}: {message_of(answer)}")

    def _sent(self, task: dict[str, Any], peer_task_id: str) -> tuple[str, dict[str, Any]]:
        params = {"peer_task_id": peer_task_id, "worker": f"peer {task['peer']}"}
        return "peer_task_sent", {**params, "check_in": self.settings.peer_check_interval}

    def _ended(self, task: dict[str, Any], status: str, message: str) -> tuple[str, dict[str, Any]]:
        log.warning("%s: task %s %s: %s", self.process, task["id"], status, message)
        ended = {"status": status, "result": "null", "error": json.dumps({"message": message})}
        return "settle_peer_task", {
            "peer": task["peer"],
            "keep": self.settings.max_task_time,
            **ended,
            "peer_task_id": task["peer_task_id"],
        }

    def _call(self, peer: Peer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A request with a token for the peer, got (or got again, once, after a 401) at its POST /token."""
        for fresh in (False, True):
            status, answer = call(peer, method, path, self.settings.webhook_timeout, body, self._token(peer, fresh))
            if status != 401:
                return status, answer
        raise PeerError(f"peer {peer.name} refuses our token: {message_of(answer)}")

    def _token(self, peer: Peer, fresh: bool) -> str:
        token, renew_at = self.tokens.get(peer.name, ("", 0.0))
        if fresh or time.time() >= renew_at:
            status, answer = call(peer, "POST", "/token", self.settings.webhook_timeout)
            if status != 200 or not isinstance(answer, dict) or "access_token" not in answer:
                raise PeerError(f"peer {peer.name} gave no token (HTTP {status}): {message_of(answer)}")
            token = answer["access_token"]
            lifetime = float(answer.get("expires_in", 60))
            self.tokens[peer.name] = (token, time.time() + lifetime / 2)
        return token
