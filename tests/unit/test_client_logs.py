"""librdkafka's log lines reach Python logging, at most one of a kind per interval."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import Producer

from driftline.settings import Settings
from stream.client_logs import KAFKA_LOGGER, RepeatFilter


def _record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("x", level, __file__, 1, msg, (), None)


def test_repeats_are_held_back_and_counted() -> None:
    now = [0.0]
    f = RepeatFilter(every=30, clock=lambda: now[0])
    assert f.filter(_record("Connect to 127.0.0.1:1 failed (after 0ms)"))
    passed = [f.filter(_record(f"Connect to 127.0.0.1:1 failed (after {i}ms)")) for i in range(40)]
    assert not any(passed)
    assert f.filter(_record("another kind of line"))
    now[0] = 31.0
    again = _record("Connect to 127.0.0.1:1 failed (after 5ms)")
    assert f.filter(again)
    assert "40 more like it" in again.getMessage()


def test_a_client_built_from_settings_logs_through_python_logging(caplog: pytest.LogCaptureFixture) -> None:
    producer = Producer(Settings(kafka_bootstrap="127.0.0.1:1").kafka_client_config())
    with caplog.at_level(logging.WARNING, logger=KAFKA_LOGGER):
        for _ in range(20):
            producer.poll(0.1)  # the log lines are handed over while the client is polled
    lines = [r for r in caplog.records if r.name == KAFKA_LOGGER]
    assert lines, "librdkafka's connection failure should reach the driftline.kafka logger"
    assert len(lines) <= 2, [r.getMessage() for r in lines]  # rate-limited: not one per retry
