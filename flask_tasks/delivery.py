"""Delivery: each finished task with a notify_url is POSTed there, signed, until a 2xx or out of attempts.

It runs inside every handler process, on threads of its own: a receiver that is slow, dead or never
answers holds a delivery thread for at most WEBHOOK_TIMEOUT and never the thread that runs tasks.
The state of each delivery is in the task's row, so it survives any restart: a delivery whose
handler died comes due again when its lease (notify_next) runs out, with the same webhook-id.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from flask_tasks import db, outbound, webhooks
from flask_tasks.config import Settings
from flask_tasks.stopping import one_line

log = logging.getLogger("flask_tasks.delivery")

LOOK_EVERY = 0.05  # seconds, at least, between two looks for due deliveries when woken
ERROR_TEXT = 500  # characters kept of a failed attempt's reason


class Attempt(NamedTuple):
    task_id: str
    attempt: int
    delivered: bool
    status: int | None  # the receiver's HTTP status, if it answered
    error: str | None


def webhook_id(task_id: str) -> str:
    """The same for every attempt at one task's delivery, so a receiver can drop repeats."""
    return "msg_" + task_id.replace("-", "")


def deliver(settings: Settings, url: str, task_id: str, attempt: int, body: bytes) -> Attempt:
    """One attempt: check the URL again (DNS may have changed), POST to the address checked, judge the answer."""
    assert settings.webhook_secret is not None
    try:
        target = outbound.check_url(url, allow_private=settings.notify_allow_private)
        headers = webhooks.signed_headers(settings.webhook_secret, webhook_id(task_id), body)
        answer = outbound.post(target, headers, body, settings.webhook_timeout)
    except (outbound.UnsafeUrlError, outbound.DeliveryError) as err:
        return Attempt(task_id, attempt, False, None, str(err)[:ERROR_TEXT])
    if 200 <= answer.status < 300:
        return Attempt(task_id, attempt, True, answer.status, None)
    # Only the status: the answer's text would show a client whatever its URL reached.
    return Attempt(task_id, attempt, False, answer.status, f"HTTP {answer.status}")


class Deliverer:
    """One thread claims due deliveries and records how they went; a pool of threads sends them."""

    def __init__(self, settings: Settings, process: str, stopping: threading.Event) -> None:
        self.settings = settings
        self.process = process
        self.stopping = stopping
        self.db = db.OwnConnection(settings, process, db.HANDLER_OPTIONS)
        self.senders = ThreadPoolExecutor(settings.webhook_concurrency, thread_name_prefix="delivery")
        self.finished: queue.SimpleQueue[Attempt] = queue.SimpleQueue()
        self.in_flight = 0  # only the delivery thread changes it
        self.wake = threading.Event()

    def start(self) -> None:
        if self.settings.webhook_secret is None:
            # A web with a secret takes notify_url: its deliveries would wait for a handler that has one.
            log.info("%s: no WEBHOOK_SECRET, so this handler delivers nothing to notify_url", self.process)
            return
        threading.Thread(target=self._loop, name="delivery", daemon=True).start()

    def poke(self) -> None:
        """Outcomes were stored: some may have a delivery due."""
        self.wake.set()

    def _loop(self) -> None:
        backoff = db.Backoff()
        while not self.stopping.is_set():
            try:
                self._record_finished()
                free = self.settings.webhook_concurrency - self.in_flight
                claimed = self._claim(free) if free > 0 else 0
                backoff.reset()
                if claimed < free or free == 0:  # a short batch: nothing more is due now
                    self.wake.wait(self.settings.poll_interval)
                    self.wake.clear()
                    time.sleep(LOOK_EVERY)
            except Exception as err:  # this thread must outlive any error, or deliveries stop
                log.warning("%s: delivery database error, retrying: %s", self.process, one_line(err))
                self.db.drop()
                time.sleep(backoff.next())

    def _claim(self, limit: int) -> int:
        # An attempt ends within WEBHOOK_TIMEOUT (resolving the host aside): twice that and more is lost.
        lease = 2 * self.settings.webhook_timeout + 5
        rows = db.run_dicts(self.db.get(), "claim_deliveries", {"limit": limit, "lease": lease})
        for row in rows:
            url, attempt = row.pop("delivery_url"), row.pop("delivery_attempt")
            body = json.dumps(row, separators=(",", ":")).encode()
            self.in_flight += 1
            self.senders.submit(self._send, url, row["id"], attempt, body)
        return len(rows)

    def _send(self, url: str, task_id: str, attempt: int, body: bytes) -> None:
        try:
            outcome = deliver(self.settings, url, task_id, attempt, body)
        except Exception as err:  # a bug here must not lose the attempt's slot
            outcome = Attempt(task_id, attempt, False, None, f"delivery failed: {one_line(err)}"[:ERROR_TEXT])
        self.finished.put(outcome)
        self.wake.set()

    def _record_finished(self) -> None:
        while True:
            try:
                outcome = self.finished.get_nowait()
            except queue.Empty:
                return
            try:
                self._record(outcome)
            except Exception:
                self.finished.put(outcome)  # kept for the next try, after the reconnect
                raise
            self.in_flight -= 1

    def _record(self, outcome: Attempt) -> None:
        settings = self.settings
        params: dict[str, Any] = {
            "id": outcome.task_id,
            "attempt": outcome.attempt,
            "delivered": outcome.delivered,
            "max_attempts": settings.webhook_max_attempts,
            "retry_in": db.retry_delay(outcome.attempt, settings.webhook_backoff),
            "status": outcome.status,
            "error": outcome.error,
        }
        db.run(self.db.get(), "record_delivery", params)
        if outcome.delivered:
            log.info("%s: task %s delivered (attempt %s)", self.process, outcome.task_id, outcome.attempt)
        else:
            last = outcome.attempt >= settings.webhook_max_attempts
            log.warning(
                "%s: task %s not delivered (attempt %s%s): %s",
                self.process,
                outcome.task_id,
                outcome.attempt,
                ", the last" if last else "",
                outcome.error,
            )
