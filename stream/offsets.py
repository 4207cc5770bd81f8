"""Where a topic ends right now: to read only what is written from here on."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition


def end_offsets(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[TopicPartition]:
    """Each partition of ``topic`` at its current high watermark; LookupError if it does not exist."""
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        raise LookupError(f"topic {topic!r} does not exist (run `driftline topics create`)")
    return [
        TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1])
        for p in meta.partitions
    ]
