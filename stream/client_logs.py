"""Kafka client logs through Python logging, at warning and above, rate-limited.

librdkafka prints its own log lines (``%3|1733...|FAIL|rdkafka#producer-1| ...``) straight to
stderr unless a client is given a ``logger``; during a broker outage every client repeats its
connection failure several times a second. `client_log_config` gives every confluent-kafka
client the shared ``driftline.kafka`` logger, whose filter lets the first line of a kind
through and then at most one per `REPEAT_SECONDS`, noting how many it held back.
`quiet_library_logs` does the same level setting for Faust's and aiokafka's own loggers.

confluent-kafka hands a client's log lines to the logger only while the application polls
that client (poll/consume/flush), from the polling thread, never from librdkafka's threads.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

KAFKA_LOGGER = "driftline.kafka"
REPEAT_SECONDS = 30.0
# librdkafka's syslog level: 4 = warning; info/debug lines are not even produced.
LIBRDKAFKA_LOG_LEVEL = 4
# Faust, its service framework and its Kafka client log start-up chatter at info.
LIBRARY_LOGGERS = ("faust", "mode", "aiokafka", "kafka")

_DIGITS = re.compile(r"\d+")


class RepeatFilter(logging.Filter):
    """Passes a record whose kind was not seen in the last ``every`` seconds, drops the others.

    A record's kind is its level and its text with numbers removed, so "Connect to
    127.0.0.1:9092 failed (after 0ms)" and "(after 3ms)" are one kind. The next record of a
    kind let through says how many were dropped in between.
    """

    def __init__(self, every: float = REPEAT_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[int, str], float] = {}
        self._dropped: dict[tuple[int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.levelno, _DIGITS.sub("#", record.getMessage()))
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.every:
                self._dropped[kind] = self._dropped.get(kind, 0) + 1
                return False
            self._last[kind] = now
            dropped = self._dropped.pop(kind, 0)
            if len(self._last) > 1000:  # many kinds (e.g. per-partition lines): forget the oldest
                for old in sorted(self._last, key=self._last.__getitem__)[:500]:
                    del self._last[old]
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} more like it in the last {self.every:.0f} s)"
            record.args = ()
        return True


def kafka_logger() -> logging.Logger:
    """The logger every confluent-kafka client of Driftline logs to (set up once)."""
    logger = logging.getLogger(KAFKA_LOGGER)
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        logger.addFilter(RepeatFilter())
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    return logger


def client_log_config() -> dict[str, Any]:
    """The logging part of a confluent-kafka client configuration."""
    return {"logger": kafka_logger(), "log_level": LIBRDKAFKA_LOG_LEVEL}


def quiet_library_logs(level: int = logging.WARNING) -> None:
    """Faust's and aiokafka's loggers (and the Kafka one) at ``level``: no info chatter."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    kafka_logger().setLevel(max(level, logging.WARNING))
