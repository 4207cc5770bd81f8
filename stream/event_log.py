"""The events topic as a log for historical features: every valid event with its place in it.

``read_event_log`` reads each partition from the earliest offset up to where it ends now, in
offset order, and decodes events exactly as the worker does (invalid ones, which the worker
sent to the dead-letter topic, are skipped). ``feature_store.historical`` replays the result
with the online store's own engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition
from pydantic import ValidationError

from feature_store.historical import HistoricalEvent
from stream.events import RawEvent
from stream.file_source import FileFormatError, read_events
from stream.offsets import end_offsets


def read_event_log(
    config: dict[str, Any], topic: str, poll_timeout: float = 1.0
) -> Iterator[HistoricalEvent]:
    for event, partition, offset in read_raw_log(config, topic, poll_timeout):
        yield HistoricalEvent(
            entity_id=event.entity_id,
            ts=event.ts,
            values=dict(event.features),
            partition=partition,
            offset=offset,
        )


def read_raw_log(
    config: dict[str, Any], topic: str, poll_timeout: float = 1.0
) -> Iterator[tuple[RawEvent, int, int]]:
    """Every valid event of ``topic`` (up to where it ends now) with its partition and offset."""
    for msg in read_messages(config, topic, poll_timeout):
        try:
            event = RawEvent.model_validate_json(msg.value() or b"")
        except ValidationError:
            continue  # a dead letter: never part of the features
        yield event, msg.partition() or 0, msg.offset() or 0


def read_messages(
    config: dict[str, Any], topic: str, poll_timeout: float = 1.0, topic_wait: float = 0.0
) -> Iterator[Message]:
    """Each partition of ``topic`` from the earliest offset to where it ends now, in offset order
    (``topic_wait``: see `stream.offsets.end_offsets`)."""
    return _read(config, topic, None, poll_timeout, topic_wait)


def read_recent(config: dict[str, Any], topic: str, n: int, poll_timeout: float = 1.0) -> Iterator[Message]:
    """About the last ``n`` messages of ``topic`` (``n`` / partitions from the end of each)."""
    return _read(config, topic, n, poll_timeout)


def _read(
    config: dict[str, Any], topic: str, last: int | None, poll_timeout: float, topic_wait: float = 0.0
) -> Iterator[Message]:
    consumer = Consumer(
        {
            **config,
            "group.id": f"driftline-log-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            # Prefetch at most ~16 MB (librdkafka's default is 64 MB): a reader of a whole topic,
            # like the retrain job, stays small; it consumes as fast as it processes anyway.
            "queued.max.messages.kbytes": 16384,
        }
    )
    try:
        ends = {tp.partition: tp.offset for tp in end_offsets(consumer, topic, topic_wait=topic_wait)}
        per_partition = None if last is None else -(-last // max(len(ends), 1))
        for partition, end in sorted(ends.items()):
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            start = low if per_partition is None else max(low, end - per_partition)
            if end <= start:
                continue
            consumer.assign([TopicPartition(topic, partition, start)])
            position = start - 1
            while position < end - 1:
                msgs = consumer.consume(num_messages=5000, timeout=poll_timeout)
                if not msgs:
                    # A transaction marker can hold the last offset: no message reaches it.
                    if consumer.position([TopicPartition(topic, partition)])[0].offset >= end:
                        break
                    continue
                for msg in msgs:
                    if msg.error() is not None:
                        continue
                    position = msg.offset() or 0
                    if position < end:
                        yield msg
    finally:
        consumer.close()


def read_file_log(path: Path) -> Iterator[HistoricalEvent]:
    """A JSONL/CSV export of the events topic as a log: one partition, the line number as offset.

    Export with ``driftline tail events --from-beginning --json`` piped through ``jq -c .value``,
    or write the events yourself; invalid lines raise (a training set must not silently shrink).
    """
    for record in read_events(path):
        if isinstance(record, FileFormatError):
            raise record
        e = record.event
        yield HistoricalEvent(entity_id=e.entity_id, ts=e.ts, values=dict(e.features), offset=record.line)
