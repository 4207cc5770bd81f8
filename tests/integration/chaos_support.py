"""Helpers for the chaos tests: valid synthetic events with known entities, producing with the
partition/offset of every message, a private stack with topics and a model, a stream produced in
the background while a fault is injected, and the exactness checks every chaos test ends with."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from driftline.demo import settings_env
from driftline.settings import Settings
from driftline.wiring import feature_view, online_store
from feature_store.definitions import fraud_feature_view
from stream.producer import PRODUCER_DEFAULTS
from stream.synthetic import DriftSchedule, FraudGenerator
from stream.topics import Topics, create_topics
from tests.integration.worker_support import predictions, produce_events, register
from tests.private_stack import PrivateStack

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


EVENTS = 20_000
ENTITIES = 500


@contextmanager
def private_stack(tmp_path: Path) -> Iterator[PrivateStack]:
    """A private broker + Redis with this test's topics and a production fraud model."""
    with PrivateStack(tmp_path) as ps:
        create_topics(AdminClient(ps.settings.kafka_client_config()), Topics(ps.settings.topic_prefix), 6)
        register(ps.settings)
        yield ps


class BackgroundStream:
    """`EVENTS` valid synthetic events produced at `rate` per second in a thread (the test's
    producer rides out the same faults: librdkafka retries until its delivery timeout)."""

    def __init__(self, s: Settings, rate: float = 1000, n: int = EVENTS, seed: int = 7) -> None:
        self.n = n
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(s, n, rate, seed), daemon=True)
        self.thread.start()

    def _run(self, s: Settings, n: int, rate: float, seed: int) -> None:
        try:
            produce_events(s, n, seed=seed, entities=ENTITIES, rate=rate)
        except BaseException as exc:
            self.errors.append(exc)

    def join(self, timeout: float = 300) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the producer did not finish"
        assert not self.errors, self.errors


def assert_scored(s: Settings, n: int, exactly_once: bool, timeout: float = 240) -> Counter[str]:
    """Every valid event has a served prediction: at least one, or exactly one (read_committed)."""
    preds = predictions(s, n, timeout=timeout)
    served = Counter(str(p["event_id"]) for p in preds if p["served"])
    assert len(served) == n, f"{len(served)} of {n} events have a prediction"
    if exactly_once:
        repeated = {e: c for e, c in served.items() if c > 1}
        assert not repeated, f"{len(repeated)} events scored more than once, e.g. {list(repeated)[:3]}"
    return served


def assert_counts_exact(s: Settings, served: Counter[str]) -> None:
    """For every entity, the online ``count_24h`` equals its number of valid events (the whole
    stream spans a few hours of event time, so all of them are in the 24 h window)."""
    preds = predictions(s, len(served), timeout=60)
    events_of: dict[str, set[str]] = {}
    for p in preds:
        events_of.setdefault(str(p["entity_id"]), set()).add(str(p["event_id"]))
    view = feature_view(s)
    assert view is not None
    store = online_store(s, view)
    wrong = {}
    for entity, ids in events_of.items():
        found = store.describe(entity)
        count = None if found is None else found.values.get("count_24h")
        if count != len(ids):
            wrong[entity] = (count, len(ids))
    sample = list(wrong.items())[:5]
    assert not wrong, f"{len(wrong)} entities with a wrong count_24h (stored, events): {sample}"


def spawn_cli(s: Settings, log: Path, *args: str) -> subprocess.Popen[str]:
    """`driftline ARGS` with exactly `s`, its output appended to `log`."""
    with log.open("a") as out:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-c", "from driftline.cli import main; main()", *args],
            env={**os.environ, **settings_env(s)},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
