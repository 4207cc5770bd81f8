"""Small helpers shared by tests."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from driftline.settings import Settings


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `driftline ARGS` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-c", "from driftline.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    def json(self) -> Any:
        return orjson.loads(self.value)


def consume_all(s: Settings, topic: str, expected: int, timeout: float = 120) -> list[Record]:
    """Read a whole topic from the beginning until `expected` messages and the end of every
    partition (so that duplicates beyond `expected` are seen, not hidden), or until timeout."""
    consumer = Consumer(
        {
            **s.kafka_client_config(),
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    meta: Any = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    at_end: set[int] = set()
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=5000, timeout=0.5):
            err = msg.error()
            if err is not None and err.code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition() or 0)
                continue
            assert err is None, err
            at_end.discard(msg.partition() or 0)
            out.append(Record(msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value() or b""))
        if len(out) >= expected and len(at_end) == len(meta.partitions):
            break
    consumer.close()
    return out


def topic_size(s: Settings, topic: str) -> int:
    """Messages written to `topic` so far: the sum of its high watermarks (no transactions)."""
    consumer = Consumer({**s.kafka_client_config(), "group.id": f"test-{uuid.uuid4().hex}"})
    try:
        meta: Any = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions
        )
    finally:
        consumer.close()


def committed_total(s: Settings, group: str, topic: str) -> int:
    """The offsets `group` has committed on `topic`, summed over its partitions.

    Read read_uncommitted: a read_committed client's offset fetch asks for stable offsets and so
    waits (here: times out) while a SIGKILLed transactional process (the outcome joiner, an
    exactly-once worker) left offsets pending in an open transaction; read_uncommitted returns
    the offsets committed so far at once, which is what the tests count."""
    consumer = Consumer({**s.kafka_client_config(), "group.id": group, "isolation.level": "read_uncommitted"})
    try:
        return committed_of(consumer, topic)
    finally:
        consumer.close()


def committed_of(consumer: Consumer, topic: str) -> int:
    """The offsets `consumer`'s group has committed on `topic`, summed over its partitions."""
    meta: Any = consumer.list_topics(topic, timeout=10).topics[topic]
    tps = consumer.committed([TopicPartition(topic, p) for p in meta.partitions], timeout=10)
    return sum(max(tp.offset, 0) for tp in tps)
