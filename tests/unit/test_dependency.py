"""The outage state machine (stream.dependency) and the metrics server's /healthz."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request

import pytest
import redis
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from stream.dependency import Dependency, call_with_retry, dependency_gauge, outage_of
from stream.metrics import WorkerMetrics
from tests.private_stack import free_port


def _dep(registry: CollectorRegistry, probe: object = None) -> Dependency:
    return Dependency("redis", "127.0.0.1:1", dependency_gauge(registry), probe=probe)  # type: ignore[arg-type]


def test_one_line_per_state_change_and_the_gauge(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    dep = _dep(registry)
    up = lambda: registry.get_sample_value("driftline_dependency_up", {"dependency": "redis"})  # noqa: E731
    assert up() == 1
    with caplog.at_level(logging.INFO, logger="driftline.dependency"):
        for _ in range(50):
            dep.down(redis.ConnectionError("refused"))
        assert up() == 0 and not dep.up
        for _ in range(50):
            dep.recovered()
    assert up() == 1 and dep.up
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "redis at 127.0.0.1:1 is unreachable" in lines[0] and "refused" in lines[0]
    assert "redis at 127.0.0.1:1 is back" in lines[1]


def test_backoff_is_capped_exponential_with_jitter() -> None:
    dep = Dependency("kafka", "b:9092", initial_delay=0.1, max_delay=2.0)
    delays = [dep.next_delay() for _ in range(12)]
    assert all(0.05 <= d <= 2.0 for d in delays)
    assert delays[0] <= 0.1 and max(delays[-4:]) > 1.0  # grew, then hit the cap
    assert len({round(d, 6) for d in delays[-4:]}) > 1  # jittered, not one fixed value
    dep.down("x")
    dep.recovered()
    assert dep.next_delay() <= 0.1  # starts over after a recovery


def test_outage_classification() -> None:
    assert outage_of(redis.ConnectionError("x")) == "redis"
    assert outage_of(redis.TimeoutError("x")) == "redis"
    assert outage_of(redis.BusyLoadingError("loading")) == "redis"
    assert outage_of(redis.ResponseError("LOADING Redis is loading the dataset in memory")) == "redis"
    assert outage_of(ConnectionResetError(104, "reset")) == "redis"
    assert outage_of(TimeoutError()) == "redis"
    assert outage_of(KafkaException(KafkaError(KafkaError._TRANSPORT))) == "kafka"
    assert outage_of(KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN))) == "kafka"
    assert outage_of(redis.ResponseError("WRONGTYPE")) is None
    assert outage_of(ValueError("bad")) is None
    assert outage_of(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))) is None


def test_call_with_retry_waits_out_an_outage_then_raises_real_errors() -> None:
    registry = CollectorRegistry()
    dep = Dependency("redis", "r", dependency_gauge(registry), initial_delay=0.001, max_delay=0.002)
    calls = iter([redis.ConnectionError("down"), redis.ConnectionError("down"), "ok"])

    def flaky() -> object:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert call_with_retry({"redis": dep}, flaky) == "ok"
    assert dep.up
    with pytest.raises(ValueError):
        call_with_retry({"redis": dep}, lambda: int("x"))


def test_check_probes_and_marks() -> None:
    state = {"fail": True}

    def probe() -> None:
        if state["fail"]:
            raise redis.ConnectionError("refused")

    dep = _dep(CollectorRegistry(), probe)
    assert dep.check() is False and not dep.up
    with pytest.raises(redis.ConnectionError):
        dep.ensure()
    state["fail"] = False
    assert dep.check() is True and dep.up


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthz_fails_when_no_batch_completed_for_the_bound_while_lagging() -> None:
    m = WorkerMetrics()
    port = free_port()
    m.serve(port, liveness_bound=60)
    base = f"http://127.0.0.1:{port}"
    assert _get(f"{base}/healthz")[0] == 200
    m.consumer_lag.labels("0").set(10)
    assert _get(f"{base}/healthz")[0] == 200  # lagging, but a batch completed just now
    m.last_batch_at -= 120
    status, body = _get(f"{base}/healthz")
    assert status == 503 and "no batch completed" in body
    m.consumer_lag.labels("0").set(0)
    assert _get(f"{base}/healthz")[0] == 200  # idle without lag is healthy
    status, body = _get(f"{base}/metrics")
    assert status == 200 and "driftline_last_batch_completed_timestamp" in body
