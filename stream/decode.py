"""Turning a micro-batch of Kafka messages into validated events plus dead letters.

Validation is pydantic-core's JSON parser straight from the message bytes (no intermediate
dicts); the result is column-oriented so the model input can be assembled with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Message
from pydantic import ValidationError

from stream.dead_letter import DeadLetter
from stream.events import FeatureValue, RawEvent, explain


@dataclass
class EventBatch:
    """The valid events of one micro-batch, in consumption order."""

    events: list[RawEvent] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)  # the source messages, for dead letters

    def __len__(self) -> int:
        return len(self.events)

    @property
    def entity_ids(self) -> list[str]:
        return [e.entity_id for e in self.events]

    def event_times(self) -> np.ndarray:
        """Event times as epoch seconds (float64)."""
        return np.fromiter((e.ts.timestamp() for e in self.events), dtype=np.float64, count=len(self))

    def subset(self, rows: Sequence[int]) -> EventBatch:
        return EventBatch(
            [self.events[i] for i in rows],
            [self.partitions[i] for i in rows],
            [self.offsets[i] for i in rows],
            [self.messages[i] for i in rows],
        )

    def dead_letter(self, i: int, reason: str, reason_code: str, worker: str) -> DeadLetter:
        msg = self.messages[i]
        return DeadLetter.of(
            reason,
            reason_code,
            msg.topic() or "",
            self.partitions[i],
            self.offsets[i],
            msg.key(),
            msg.value(),
            worker,
        )

    def columns(self, names: Sequence[str]) -> dict[str, list[FeatureValue]]:
        """Feature columns by name; a feature an event lacks is None (missing)."""
        return {name: [e.features.get(name) for e in self.events] for name in names}


def decode_batch(messages: Sequence[Message], worker: str) -> tuple[EventBatch, list[DeadLetter]]:
    batch, dead = EventBatch(), []
    for msg in messages:
        value = msg.value()
        partition, offset = msg.partition() or 0, msg.offset() or 0
        try:
            if value is None:
                raise ValueError("empty message (null value)")
            event = RawEvent.model_validate_json(value)
        except ValidationError as exc:
            reason, code = explain(exc)
            dead.append(
                DeadLetter.of(reason, code, msg.topic() or "", partition, offset, msg.key(), value, worker)
            )
            continue
        except ValueError as exc:
            dead.append(
                DeadLetter.of(
                    str(exc), "empty", msg.topic() or "", partition, offset, msg.key(), value, worker
                )
            )
            continue
        batch.events.append(event)
        batch.partitions.append(partition)
        batch.offsets.append(offset)
        batch.messages.append(msg)
    return batch, dead
