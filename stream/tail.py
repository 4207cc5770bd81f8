"""Reading a topic from the shell: ``driftline tail TOPIC``.

The tail consumer never commits offsets (it is an observer, not a processor): with
``from_beginning`` it starts at the earliest offset of every partition, otherwise at the end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition


@dataclass(frozen=True)
class TailedMessage:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any  # parsed JSON when the payload is JSON, else the raw text
    timestamp_ms: int

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "timestamp_ms": self.timestamp_ms,
            "value": self.value,
        }


def _decode(payload: bytes | None) -> Any:
    if payload is None:
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode("utf-8", errors="replace")


def tail(
    config: dict[str, Any],
    topic: str,
    from_beginning: bool = False,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
) -> Iterator[TailedMessage]:
    """Yield messages until ``max_messages`` or ``idle_timeout`` seconds without one."""
    consumer = Consumer(
        {
            **config,
            "group.id": f"driftline-tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        topic_meta = meta.topics.get(topic)
        if topic_meta is None or topic_meta.error is not None:
            raise LookupError(f"topic {topic!r} does not exist")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in topic_meta.partitions])
        seen, last = 0, time.monotonic()
        while max_messages is None or seen < max_messages:
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    return
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"consume error on {topic}: {err.str()}")
            last = time.monotonic()
            seen += 1
            key = msg.key()
            ts_type, ts = msg.timestamp()
            yield TailedMessage(
                topic=msg.topic() or topic,
                partition=msg.partition() or 0,
                offset=msg.offset() or 0,
                key=key.decode("utf-8", errors="replace") if key is not None else None,
                value=_decode(msg.value()),
                timestamp_ms=ts if ts_type else 0,
            )
    finally:
        consumer.close()
