"""The registry's durable copy on Kafka: the compacted ``<prefix>.registry`` topic.

Every record of `inference.registry_log` becomes one message (key = record key, a tombstone for
``None``), all on partition 0 so the log keeps their order. Compaction keeps the newest value
per key, and nothing expires by time, so the topic holds every version and its artifact (up to
the registry's retention) for as long as the cluster lives, reachable from every machine that
reaches the brokers, unlike Redis (often a cache) or a local directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer

from inference.registry_log import Record, RegistryArchiveError
from stream.event_log import read_messages
from stream.producer import PRODUCER_DEFAULTS


class KafkaRegistryArchive:
    """`RegistryArchive` on one compacted topic (created by `driftline topics create`)."""

    def __init__(
        self, kafka_config: dict[str, Any], topic: str, timeout: float = 30.0, topic_wait: float = 10.0
    ) -> None:
        self.config = kafka_config
        self.topic = topic
        self.timeout = timeout
        self.topic_wait = topic_wait
        self._producer: Producer | None = None

    def _checked_producer(self) -> Producer:
        if self._producer is None:
            producer = Producer({**self.config, **PRODUCER_DEFAULTS, "linger.ms": 0})
            # A topic created a moment ago may still be electing its leader: retry a while.
            deadline = time.monotonic() + self.topic_wait
            while True:
                try:
                    meta = producer.list_topics(self.topic, timeout=self.timeout).topics.get(self.topic)
                except KafkaException as exc:
                    raise RegistryArchiveError(f"cannot reach Kafka for {self.topic}: {exc}") from None
                if meta is not None and meta.error is None and meta.partitions:
                    break
                if time.monotonic() > deadline:
                    raise RegistryArchiveError(
                        f"topic {self.topic} does not exist: run `driftline topics create` (the "
                        "registry keeps its durable copy there)"
                    )
                time.sleep(0.2)
            self._producer = producer
        return self._producer

    def write(self, records: Sequence[Record]) -> None:
        producer = self._checked_producer()
        errors: list[str] = []

        def on_delivery(err: object, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        try:
            for key, value in records:
                producer.produce(self.topic, value, key.encode(), partition=0, on_delivery=on_delivery)
                producer.poll(0)
        except (KafkaException, BufferError) as exc:
            errors.append(str(exc))
        if producer.flush(self.timeout) or errors:
            raise RegistryArchiveError(f"{self.topic}: {'; '.join(errors[:3]) or 'not acknowledged in time'}")

    def read(self) -> Iterator[Record]:
        self._checked_producer()  # waits for a just-created topic's leader, as a write does
        try:
            # The producer saw the topic: a reader's broker not knowing it yet is metadata lag.
            for msg in read_messages(self.config, self.topic, topic_wait=self.topic_wait):
                key = msg.key()
                if key is not None:
                    yield key.decode(), msg.value()
        except LookupError as exc:
            raise RegistryArchiveError(str(exc)) from None
