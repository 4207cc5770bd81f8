"""Helpers for the chaos tests: valid synthetic events with known entities, producing with the
partition/offset of every message, and the exactness checks every chaos test makes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from driftline.settings import Settings
from driftline.wiring import online_store
from feature_store.definitions import fraud_feature_view
from stream.producer import PRODUCER_DEFAULTS
from stream.synthetic import DriftSchedule, FraudGenerator

BROKER_LIMIT = 1_000_000  # the smallest message limit on the way (the producer's message.max.bytes)


@dataclass(frozen=True)
class Sent:
    """One produced message and where it landed."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


def valid_events(
    n: int, seed: int = 1, entities: int = 500, gap: float = 0.2, schedule: DriftSchedule | None = None
) -> list[tuple[str, bytes]]:
    """``n`` synthetic events (entity, JSON), ``gap`` s of event time apart (keep n * gap < 24 h)."""
    gen = FraudGenerator(
        seed=seed, entities=entities, start_ts=1.7e9, mean_gap_s=gap, schedule=schedule or DriftSchedule()
    )
    batch = gen.batch(0, n)
    return [(e["entity_id"], orjson.dumps(e)) for e in batch.event_dicts()]


def produce_all(
    s: Settings, topic: str, items: list[tuple[bytes | None, bytes | None]], max_bytes: int = BROKER_LIMIT
) -> list[Sent]:
    """Produce (key, value) pairs in order, wait for every ack; each one's partition/offset."""
    producer = Producer(
        {**s.kafka_client_config(), **PRODUCER_DEFAULTS, "message.max.bytes": max_bytes + 100_000}
    )
    sent: list[Sent | None] = [None] * len(items)
    errors: list[str] = []

    def report(i: int) -> Any:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(err.str())
            else:
                sent[i] = Sent(msg.key(), msg.value(), msg.partition() or 0, msg.offset() or 0)

        return on_delivery

    for i, (key, value) in enumerate(items):
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=report(i))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0 and not errors, errors[:3]
    return [x for x in sent if x is not None]


def allow_large_messages(s: Settings, topic: str, max_bytes: int) -> None:
    """Raise ``topic``'s ``max.message.bytes`` (so a test can put oversized messages in it)."""
    admin = AdminClient(s.kafka_client_config())
    entry = ConfigEntry("max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result()


def count_24h_mismatches(s: Settings, expected: Counter[str]) -> dict[str, tuple[int, float]]:
    """Entities whose online ``count_24h`` is not their number of valid events: (want, got)."""
    store = online_store(s, fraud_feature_view())
    entities = sorted(expected)
    got = store.get_online_features(entities, ["count_24h"])[:, 0]
    return {
        e: (expected[e], float(g))
        for e, g in zip(entities, got.tolist(), strict=True)
        if not np.isclose(g, expected[e])
    }
