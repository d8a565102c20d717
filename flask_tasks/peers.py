"""Peer servers: a task posted with "peer" is sent to that flask-tasks server, followed there, and ended here.

A handler sends it to the peer's POST /task with a token from the peer's POST /token, our task id as
the idempotency key (a send retried after any failure never makes a second task there) and a
notify_url back to this server's /peer/<name>/callback. The peer's signed callback ends the task here
(`settle`); if none comes within PEER_CHECK_INTERVAL, the handler asks the peer's GET /task/<id>.
A cancel here is passed on to the peer. A round holds its tasks by a lease (their run_at), not by
row locks, so a cancel or a callback never waits for a peer's answer; each write of the round checks
that the lease is still its own.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from flask_tasks import db, outbound, shape
from flask_tasks.config import Peer, Settings
from flask_tasks.stopping import one_line

log = logging.getLogger("flask_tasks.peers")

ROUND = 8  # tasks one round sends or asks about, at once
LONGEST_RETRY = 300.0  # seconds: the cap on the wait before the next try to reach a peer
ANSWER_LIMIT = 64 * 1024 * 1024  # bytes read of a peer's answer: a task with its result, whatever their limits
CANCEL_CHECK = 1.0  # seconds before asking the peer again about a task we asked it to cancel
Write = tuple[str, dict[str, Any]]  # a named statement of queries.sql and its parameters


class PeerError(Exception):
    """The peer could not be reached, or answered something unusable: try again later."""


def call(peer: Peer, method: str, path: str, timeout: float, body: Any = None, token: str | None = None) -> Any:
    """(status, JSON answer) of one request to a peer, within `timeout` in all; PeerError if none can be had.

    Through the same client as deliveries: one deadline, no redirects (they would carry our credentials
    elsewhere). Peers come from the operator's PEERS, so any address but link-local ones will do.
    """
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "flask-tasks"}
    headers["Authorization"] = f"Bearer {token}" if token is not None else basic_auth(peer)
    data = None if body is None else json.dumps(body).encode()
    try:
        target = outbound.check_url(peer.url + path, allow_private=True)
        answer = outbound.send(method, target, headers, data, timeout, ANSWER_LIMIT)
    except (outbound.UnsafeUrlError, outbound.DeliveryError) as err:
        raise PeerError(f"peer {peer.name} unreachable: {err}") from None
    try:
        return answer.status, json.loads(answer.text)
    except ValueError:
        raise PeerError(f"peer {peer.name} answered HTTP {answer.status} that is not JSON") from None


def basic_auth(peer: Peer) -> str:
    return "Basic " + base64.b64encode(f"{peer.client_id}:{peer.client_secret}".encode()).decode()


def message_of(answer: Any) -> str:
    return str(answer.get("message", answer)) if isinstance(answer, dict) else str(answer)


def ending(peer: str, task: Any, keep: float) -> dict[str, Any] | None:
    """settle_peer_task's parameters (but the task id) from a task as its peer shows it, if it has ended there."""
    if not isinstance(task, dict) or task.get("status") not in shape.FINAL or not isinstance(task.get("id"), str):
        return None
    error = task.get("error")
    return {
        "peer": peer,
        "peer_task_id": task["id"],
        "status": task["status"],
        "result": json.dumps(task.get("result")),
        "error": json.dumps(error) if isinstance(error, dict) else None,
        "keep": keep,
    }


def settle(conn: psycopg2.extensions.connection, task_id: str, ended: dict[str, Any]) -> bool:
    """End a task its peer ran; False if it had ended already, or the peer's task is not the one sent for it.

    A result this database cannot store (a \\u0000 in a string...) fails the task with the reason.
    """
    try:
        return bool(db.run(conn, "settle_peer_task", {"id": task_id, **ended}))
    except (psycopg2.DataError, psycopg2.errors.ProgramLimitExceeded) as err:
        failed = {"status": shape.FAILED, "result": "null"}
        failed["error"] = json.dumps({"message": f"the peer's result cannot be stored here: {db.error_text(err)}"})
        return bool(db.run(conn, "settle_peer_task", {"id": task_id, **ended, **failed}))


class PeerLink:
    """In a handler process: a thread that sends tasks to their peers and follows them there."""

    def __init__(self, settings: Settings, process: str, stopping: threading.Event) -> None:
        self.settings = settings
        self.process = process
        self.stopping = stopping
        self.db = db.OwnConnection(settings, process, db.HANDLER_OPTIONS)
        self.tokens: dict[str, tuple[str, float]] = {}  # peer name -> (token, when to get a new one)
        self.token_lock = threading.Lock()
        self.calls = ThreadPoolExecutor(ROUND, thread_name_prefix="peer")
        # A round makes at most three calls a task (a token, the send or a cancel, a look), each bounded.
        self.lease = 4 * settings.webhook_timeout + 5

    def start(self) -> None:
        # Only with PEERS: the thread holds a connection of its own. (Tasks of a peer removed from PEERS
        # are failed by the rounds of the handlers of a server that still has peers.)
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
        """Take the due peer tasks, talk to their peers at once, write what came of it; how many there were."""
        conn = self.db.get()
        tasks = db.run_dicts(conn, "claim_peer_tasks", {"limit": ROUND, "lease": self.lease})
        for task, writes in zip(tasks, self.calls.map(self._follow, tasks), strict=True):
            for statement, params in writes:
                if statement == "settle_peer_task":
                    settle(conn, task["id"], params)
                else:
                    db.run(conn, statement, {"id": task["id"], "lease": task["lease"], **params})
        return len(tasks)

    def _follow(self, task: dict[str, Any]) -> list[Write]:
        """What to write after sending a waiting task, or asking about (or cancelling) a running one."""
        peer = self.settings.peers.get(task["peer"])
        if peer is None:
            return [self._failed(task, f"peer [{task['peer']}] is no longer in PEERS")]
        try:
            if task["status"] == shape.WAITING:
                return self._send(peer, task)
            return self._look(peer, task, task["peer_task_id"])
        except Exception as err:  # unreachable, a strange answer, a bug: try again later, never stall the round
            message = str(err) if isinstance(err, PeerError) else f"peer link error: {one_line(err)}"
            retry_in = db.retry_delay(max(task["attempts"], 1), self.settings.retry_backoff, LONGEST_RETRY)
            if task["status"] == shape.RUNNING:
                retry_in = min(retry_in, self.settings.peer_check_interval)
            log.warning("%s: task %s: %s; again in %.1f s", self.process, task["id"], message, retry_in)
            return [("peer_task_retry", {"message": message, "retry_in": retry_in, "keep": self._keep()})]

    def _send(self, peer: Peer, task: dict[str, Any]) -> list[Write]:
        body = {
            "type": task["type"],
            "args": task["args"],
            "idempotency_key": task["id"],
            **(task["peer_options"] or {}),
        }
        body["notify_url"] = f"{self.settings.public_url}/peer/{peer.name}/callback"
        status, answer = self._call(peer, "POST", "/task", body)
        if status in (200, 201) and isinstance(answer, dict) and isinstance(answer.get("id"), str):
            log.info("%s: task %s sent to peer %s as %s", self.process, task["id"], peer.name, answer["id"])
            return self._look(peer, task, answer["id"], answer)
        if 400 <= status < 500 and status not in (401, 408, 429):
            return [self._failed(task, f"peer {peer.name} refused the task: {message_of(answer)}")]
        raise PeerError(f"peer {peer.name} answered HTTP {status}: {message_of(answer)}")

    def _look(self, peer: Peer, task: dict[str, Any], peer_task_id: str, answer: Any = None) -> list[Write]:
        """Cancel it there if asked to here, then see whether it has ended there (`answer`: as just sent)."""
        if task["cancel_requested"]:
            status, answer = self._call(peer, "POST", f"/task/{peer_task_id}/cancel")
            if status == 409:  # it had ended there: look at how
                answer = None
        if answer is None:
            status, answer = self._call(peer, "GET", f"/task/{peer_task_id}")
            if status == 404:
                return [self._failed(task, f"peer {peer.name} no longer has the task (it expired there?)")]
            if status != 200:
                raise PeerError(f"peer {peer.name} answered HTTP {status}: {message_of(answer)}")
        check_in = CANCEL_CHECK if task["cancel_requested"] else self.settings.peer_check_interval
        sent = {"peer_task_id": peer_task_id, "worker": f"peer {peer.name}", "check_in": check_in}
        writes = [("peer_task_sent", sent)]
        ended = ending(peer.name, answer, self._keep())
        if ended is not None and ended["peer_task_id"] == peer_task_id:
            writes.append(("settle_peer_task", ended))
        return writes

    def _failed(self, task: dict[str, Any], message: str) -> Write:
        log.warning("%s: task %s failed: %s", self.process, task["id"], message)
        return "fail_peer_task", {"message": message, "keep": self._keep()}

    def _keep(self) -> float:
        return float(self.settings.max_task_time)

    def _call(self, peer: Peer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A request with a token for the peer, got (or got again, once, after a 401) at its POST /token."""
        token = self._token(peer)
        status, answer = call(peer, method, path, self.settings.webhook_timeout, body, token)
        if status == 401:
            token = self._token(peer, stale=token)
            status, answer = call(peer, method, path, self.settings.webhook_timeout, body, token)
            if status == 401:
                raise PeerError(f"peer {peer.name} refuses our token: {message_of(answer)}")
        return status, answer

    def _token(self, peer: Peer, stale: str | None = None) -> str:
        """Our token at the peer; a new one when it is due for renewal or is `stale` (refused)."""
        with self.token_lock:  # one POST /token at a time: the peer counts each attempt
            token, renew_at = self.tokens.get(peer.name, ("", 0.0))
            if token and token != stale and time.time() < renew_at:
                return token
            status, answer = call(peer, "POST", "/token", self.settings.webhook_timeout)
            if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
                raise PeerError(f"peer {peer.name} gave no token (HTTP {status}): {message_of(answer)}")
            expires_in = answer.get("expires_in")
            lifetime = float(expires_in) if isinstance(expires_in, int | float) else 60.0
            self.tokens[peer.name] = (answer["access_token"], time.time() + lifetime / 2)
            return answer["access_token"]
