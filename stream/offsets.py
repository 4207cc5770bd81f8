"""Where a topic ends right now: to read only what is written from here on."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

# Seen while a new topic's partitions elect their leader; librdkafka does not flag them retriable.
_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def end_offsets(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[TopicPartition]:
    """Each partition of ``topic`` at its current high watermark; LookupError if it does not exist.

    Right after a topic is created its partitions may still be electing a leader; such
    retriable errors are retried until ``timeout``, anything else is raised.
    """
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        raise LookupError(f"topic {topic!r} does not exist (run `driftline topics create`)")
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
