"""The batch watchdog shared by the worker and the outcome joiner.

A thread watches the start time of the batch (or the recovery after an outage) that the process
is in; one running longer than its bound (a call hung inside librdkafka, a transaction that cannot
finish) gets one log line and an exit with status 75 (`EXIT_STUCK`), so a supervisor (systemd,
Kubernetes) restarts the process, which redoes the uncommitted batch from the last commit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("driftline.watchdog")

EXIT_STUCK = 75  # EX_TEMPFAIL: a batch outlived the watchdog's bound; restart me

OnStuck = Callable[[float, float], None]  # (seconds the batch has run, the bound)


class Watchdog:
    """`begin` / `end` bracket a batch; `start` runs the watching thread until `stopping()`."""

    def __init__(self, bound: float, stopping: Callable[[], bool], on_stuck: OnStuck) -> None:
        self.bound = bound  # seconds; 0 = no watchdog
        self.stopping = stopping
        self.on_stuck = on_stuck
        self.started: float | None = None  # monotonic; read by the watching thread

    def begin(self) -> None:
        self.started = time.monotonic()

    def begin_if_idle(self) -> None:
        """Start the clock unless a batch is already timed (a recovery inside it)."""
        if self.started is None:
            self.begin()

    def end(self) -> None:
        self.started = None

    def start(self) -> None:
        if self.bound <= 0:
            return
        threading.Thread(target=self._watch, name="batch-watchdog", daemon=True).start()

    def _watch(self) -> None:
        bound = self.bound
        while not self.stopping():
            started = self.started
            if started is not None and time.monotonic() - started > bound:
                self.on_stuck(time.monotonic() - started, bound)
                return
            time.sleep(min(1.0, bound / 10))


def exit_stuck(process: str) -> OnStuck:
    """The watchdog's verdict for `process`: say why in one line, then exit for the supervisor.

    ``os._exit``: the stuck thread may hold librdkafka locks, so no clean shutdown is attempted;
    nothing uncommitted is lost (it is redone from the last committed offsets).
    """

    def verdict(elapsed: float, bound: float) -> None:
        log.critical(
            "a batch has been running for %.0f s (batch_deadline %.0f s): stuck; exiting with status "
            "%d so the supervisor restarts the %s (the batch is redone from the last commit)",
            elapsed,
            bound,
            EXIT_STUCK,
            process,
        )
        logging.shutdown()
        os._exit(EXIT_STUCK)

    return verdict
