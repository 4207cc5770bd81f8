"""Where a topic ends right now: to read only what is written from here on."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

# Seen while a new topic's partitions elect their leader; librdkafka does not flag them retriable.
_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def end_offsets(
    consumer: Consumer, topic: str, timeout: float = 10.0, topic_wait: float = 0.0
) -> list[TopicPartition]:
    """Each partition of ``topic`` at its current high watermark; LookupError if it does not exist.

    Right after a topic is created its partitions may still be electing a leader; such
    retriable errors are retried until ``timeout``, anything else is raised. On a cluster a
    broker may not know a topic another one created a moment ago: a caller that knows it exists
    gives its metadata ``topic_wait`` seconds to arrive.
    """
    wait_until = time.monotonic() + topic_wait
    while True:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is not None and meta.error is None:
            break
        if time.monotonic() >= wait_until:
            raise LookupError(f"topic {topic!r} does not exist (run `driftline topics create`)")
        time.sleep(0.2)
    deadline = time.monotonic() + timeout
    ends = []
    for p in meta.partitions:
        while True:
            try:
                high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                break
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if not (err.retriable() or err.code() in _TRANSIENT) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        ends.append(TopicPartition(topic, p, high))
    return ends


def next_offsets(msgs: list[Message]) -> list[TopicPartition]:
    """Per partition, the offset after the last of ``msgs``: what a commit of them records."""
    high: dict[tuple[str, int], int] = {}
    for m in msgs:
        key = (m.topic() or "", m.partition() or 0)
        high[key] = max(high.get(key, -1), m.offset() or 0)
    return [TopicPartition(t, p, o + 1) for (t, p), o in high.items()]


def first_offsets(msgs: list[Message]) -> list[TopicPartition]:
    """Per partition, the first offset of ``msgs``: where to seek to redo them."""
    first: dict[tuple[str, int], int] = {}
    for m in msgs:
        key = (m.topic() or "", m.partition() or 0)
        first[key] = min(first.get(key, m.offset() or 0), m.offset() or 0)
    return [TopicPartition(t, p, o) for (t, p), o in first.items()]
