"""Graceful stop for the long-running processes: SIGTERM or SIGINT asks the loop to end."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

log = logging.getLogger("flask_tasks")


class StopSignal:
    """Set by SIGTERM/SIGINT. Loops pause in short slices so they notice it at once."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.event = threading.Event()
        self.at = 0.0  # time.monotonic() of the first signal
        self.signal = ""
        self.logged = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only note it: logging here could re-enter a write the signal interrupted.
        if not self.event.is_set():
            self.at, self.signal = time.monotonic(), signal.Signals(signum).name
            self.event.set()

    def is_set(self) -> bool:
        if self.event.is_set() and not self.logged:
            self.logged = True
            log.info("%s: %s received, stopping", self.process, self.signal)
        return self.event.is_set()

    def pause(self, seconds: float) -> None:
        """Sleep up to `seconds`, returning early once a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self.event.is_set() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))


def one_line(err: BaseException) -> str:
    """An exception's message on one line, for logs."""
    return " ".join(str(err).split()) or type(err).__name__
