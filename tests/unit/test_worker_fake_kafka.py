"""A real worker (scoring, online features and the drift stage on the stack's Redis) on a fake
Kafka: failures real Kafka cannot be made to produce on demand (a refused commit after a
rebalance, an alert whose delivery failed). Needs the stack's Redis, hence `integration`."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException

from detectors.alerts import DriftAlert
from detectors.window_store import WINDOWED_DETECTORS
from driftline.settings import Settings
from driftline.wiring import redis_client
from stream.synthetic import DriftSchedule
from stream.topics import Topics
from tests.integration.test_worker_drift import START, _settings
from tests.integration.worker_support import register

pytestmark = pytest.mark.integration


class _Msg:
    """Just what the worker reads of a consumed message."""

    def __init__(self, topic: str, offset: int, key: bytes, value: bytes) -> None:
        self._topic, self._offset, self._key, self._value = topic, offset, key, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


class _FakeKafka:
    """Producer and consumer in one: produce, flush (the first one with a window's alert fails), commit."""

    def __init__(self, alerts_topic: str) -> None:
        self.alerts_topic = alerts_topic
        self.queued: list[tuple[str, bytes, Any]] = []
        self.delivered: list[tuple[str, bytes]] = []
        self.failed: list[tuple[str, bytes]] = []
        self.commits = 0
        self.seeks = 0

    def produce(self, topic: str, value: bytes, key: bytes | None = None, on_delivery: Any = None) -> None:
        self.queued.append((topic, value, on_delivery))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        fail = not self.failed and any(
            topic == self.alerts_topic
            and DriftAlert.model_validate_json(value).detector in WINDOWED_DETECTORS
            for topic, value, _ in self.queued
        )
        for topic, value, on_delivery in self.queued:
            (self.failed if fail else self.delivered).append((topic, value))
            if fail and on_delivery is not None:
                on_delivery(KafkaError(KafkaError._TRANSPORT, "broker unavailable (fake)"), None)
        self.queued = []
        return 0

    def commit(self, offsets: Any = None, asynchronous: bool = True) -> None:
        self.commits += 1

    def seek(self, _tp: Any) -> None:
        self.seeks += 1


def _fake_worker(s: Settings, fake: _FakeKafka) -> Any:
    """A real worker (scoring, feature store, drift stage on the real Redis) on a fake Kafka."""
    from driftline.wiring import build_worker
    from stream.scoring import wait_for_scorer
    from stream.worker import WorkerConfig

    register(s)
    worker = build_worker(
        s, WorkerConfig(model="fraud", group_id=f"{s.topic_prefix}-fake", worker_id="w-fake")
    )
    worker.consumer.close()
    worker.producer = fake  # type: ignore[assignment]
    worker.consumer = fake  # type: ignore[assignment]
    worker.scorer = wait_for_scorer(worker.follower, lambda: False)
    assert worker.drift is not None
    worker.drift.set_partitions([0])
    return worker


def _fake_messages(s: Settings, n: int = 9_000) -> list[_Msg]:
    from stream.synthetic import FraudGenerator

    topics = Topics(s.topic_prefix)
    gen = FraudGenerator(seed=4, entities=600, schedule=DriftSchedule(covariate_at=3_000), start_ts=START)
    events = [e for b in gen.batches(n) for e in b.event_dicts()]
    return [_Msg(topics.events, i, e["entity_id"].encode(), orjson.dumps(e)) for i, e in enumerate(events)]


class _RebalancedKafka(_FakeKafka):
    """The first commit fails as when the group rebalanced during the batch."""

    def commit(self, offsets: Any = None, asynchronous: bool = True) -> None:
        super().commit(offsets, asynchronous)
        if self.commits == 1:
            raise KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION))


def test_a_commit_refused_by_a_rebalance_does_not_stop_the_worker(own_settings: Settings) -> None:
    s = _settings(own_settings)
    fake = _RebalancedKafka(Topics(s.topic_prefix).signals)
    worker = _fake_worker(s, fake)
    msgs = _fake_messages(s, 2_000)
    worker.process(msgs[:1000])
    worker.process(msgs[1000:])
    assert fake.commits == 2 and worker.metrics.retries._value.get() == 0
    assert len([v for t, v in fake.delivered if t == Topics(s.topic_prefix).predictions]) == 2_000


def test_a_batch_whose_alerts_failed_is_redone_with_the_same_alerts(own_settings: Settings) -> None:
    """The worker's own retry (an output failed): the redo produces the window's alerts as decided."""
    s = _settings(own_settings)
    r = redis_client(s)
    topics = Topics(s.topic_prefix)
    fake = _FakeKafka(topics.signals)
    worker = _fake_worker(s, fake)
    for lo in range(0, 9_000, 500):
        worker.process(_fake_messages(s)[lo : lo + 500])
    failed = [DriftAlert.model_validate_json(v) for t, v in fake.failed if t == topics.signals]
    sent = [DriftAlert.model_validate_json(v) for t, v in fake.delivered if t == topics.signals]
    assert failed and worker.metrics.retries._value.get() == 1
    assert [a.id for a in sent] == list(dict.fromkeys(a.id for a in sent)), "an alert was sent twice"
    assert all(a in sent for a in failed)  # the very alerts decided (ADWIN's too), once each
    windowed = [a for a in failed if a.detector in WINDOWED_DETECTORS]
    assert windowed
    prefix = f"{{{s.topic_prefix}:drift:fraud:1}}"
    assert r.zcard(f"{prefix}:~pending") == 0
    for a in windowed:
        raw = r.get(f"{prefix}:~closed:{int(a.window_start_ts)}")
        assert json.loads(raw or b"{}")["state"] == "published"
