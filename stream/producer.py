"""Producing to Kafka with every delivery accounted for.

``DeliveryTracker`` counts what was handed to the client, what the broker acknowledged and what
failed (with the first reasons), so a caller can say exactly what happened and exit non-zero on
any failure. The producer is idempotent, so client retries never reorder or duplicate messages
within a partition.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from stream.synthetic import Batch

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,  # acks=all, ordered, no duplicates on retry
    "linger.ms": 20,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
}


@dataclass
class DeliveryTracker:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{msg.topic()}: {err.str()}")

    @property
    def pending(self) -> int:
        return self.sent - self.delivered - self.failed


class EventProducer:
    """A thin, explicit wrapper: ``send`` JSON-able values, ``flush`` and read the tally."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer({**PRODUCER_DEFAULTS, **config})
        self.tally = DeliveryTracker()

    def send(self, topic: str, key: str, value: dict[str, Any] | bytes) -> None:
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        while True:
            try:
                self._producer.produce(topic, payload, key.encode(), on_delivery=self.tally.on_delivery)
                break
            except BufferError:
                # Local queue full: serve delivery callbacks until there is room again.
                self._producer.poll(0.05)
        self.tally.sent += 1
        self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> DeliveryTracker:
        remaining = self._producer.flush(timeout)
        if remaining:
            self.tally.errors.append(f"{remaining} messages not acknowledged after {timeout}s")
        return self.tally


class RateLimiter:
    """Paces a loop to ``rate`` items per second (0 = unlimited)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._start = clock()
        self._count = 0

    def wait(self, items: int) -> None:
        self._count += items
        if self.rate <= 0:
            return
        ahead = self._count / self.rate - (self._clock() - self._start)
        if ahead > 0:
            time.sleep(ahead)


@dataclass
class PendingLabel:
    due_index: int
    event_id: str
    label: int
    ts: str


def produce_synthetic(
    producer: EventProducer,
    batches: Iterable[Batch],
    events_topic: str,
    labels_topic: str,
    label_delay: int,
    rate: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
    step: int = 500,
) -> None:
    """Send generated events, and each label ``label_delay`` events after its event."""
    limiter = RateLimiter(rate)
    pending: deque[PendingLabel] = deque()
    for batch in batches:
        events = batch.event_dicts()
        for lo in range(0, len(events), step):
            chunk = events[lo : lo + step]
            for offset, event in enumerate(chunk):
                i = int(batch.index[lo + offset])
                producer.send(events_topic, event["entity_id"], event)
                pending.append(
                    PendingLabel(
                        i + label_delay,
                        event["event_id"],
                        int(batch.labels[lo + offset]),
                        event["ts"],
                    )
                )
                while pending and pending[0].due_index <= i:
                    _send_label(producer, labels_topic, pending.popleft(), event["ts"])
            limiter.wait(len(chunk))
            if on_progress:
                on_progress(len(chunk))
    last_ts = pending[-1].ts if pending else ""
    while pending:
        _send_label(producer, labels_topic, pending.popleft(), last_ts)


def _send_label(producer: EventProducer, topic: str, label: PendingLabel, now_ts: str) -> None:
    # A label is known at the event time of the event during which it is released.
    producer.send(topic, label.event_id, {"event_id": label.event_id, "label": label.label, "ts": now_ts})
