"""Turning a micro-batch of Kafka messages into validated events plus dead letters.

Validation is pydantic-core's JSON parser straight from the message bytes (no intermediate
dicts); the result is column-oriented so the model input can be assembled with numpy. Limits
(`InputLimits`) bound what is parsed and kept; every refused message becomes a dead letter with
a reason code: ``empty``, ``event_too_large``, ``invalid_json``, ``invalid_json_binary`` (not
UTF-8), ``too_deep`` (nesting past the parser's recursion limit), ``schema_*`` (the contract),
``too_many_features``, ``feature_too_long``, ``future_event``; later, the feature store's
``late_event``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Message
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream.dead_letter import DEFAULT_KEEP_BYTES, MAX_KEEP_BYTES, DeadLetter
from stream.events import FeatureValue, RawEvent, explain


@dataclass
class EventBatch:
    """The valid events of one micro-batch, in consumption order."""

    events: list[RawEvent] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)  # the source messages, for dead letters
    keep: int = DEFAULT_KEEP_BYTES  # of an original, in its dead letter
    _times: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.events)

    @property
    def entity_ids(self) -> list[str]:
        return [e.entity_id for e in self.events]

    def event_times(self) -> np.ndarray:
        """Event times as epoch seconds (float64; computed once)."""
        if self._times is None or len(self._times) != len(self):
            self._times = np.fromiter(
                (e.ts.timestamp() for e in self.events), dtype=np.float64, count=len(self)
            )
        return self._times

    def subset(self, rows: Sequence[int]) -> EventBatch:
        return EventBatch(
            [self.events[i] for i in rows],
            [self.partitions[i] for i in rows],
            [self.offsets[i] for i in rows],
            [self.messages[i] for i in rows],
            self.keep,
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
            keep=self.keep,
        )

    def columns(self, names: Sequence[str]) -> dict[str, list[FeatureValue]]:
        """Feature columns by name; a feature an event lacks is None (missing)."""
        return {name: [e.features.get(name) for e in self.events] for name in names}


class InputLimits(BaseModel):
    """What the worker accepts as an event, and how much of a refused one its dead letter keeps.

    Each limit has its own dead-letter reason code (`decode_batch`), so an oversized or hostile
    message costs one dead letter, never a stuck consumer or a poisoned entity.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_event_bytes: int = Field(1024 * 1024, ge=1024)
    """A bigger message is dead-lettered unparsed (``event_too_large``); also the consumer's
    per-partition fetch size."""
    max_features: int = Field(1000, ge=1)
    """More features in one event: ``too_many_features``."""
    max_string_length: int = Field(16_384, ge=1)
    """A longer string feature (characters): ``feature_too_long``."""
    max_future_seconds: float = Field(86_400.0, ge=0)
    """An event time further than this ahead of the wall clock: ``future_event``, refused before
    it reaches the feature store or a watermark (one such event would make every later event
    of its entity late, and close every drift window at once)."""
    dead_letter_keep_bytes: int = Field(DEFAULT_KEEP_BYTES, ge=0, le=MAX_KEEP_BYTES)
    """How much of a refused message its dead letter keeps (`stream.dead_letter`)."""


def decode_batch(
    messages: Sequence[Message], worker: str, limits: InputLimits | None = None, now: float | None = None
) -> tuple[EventBatch, list[DeadLetter]]:
    """Valid events (in order) and dead letters of one micro-batch; ``now``: the wall clock."""
    lim = limits or InputLimits()
    batch, dead = EventBatch(keep=lim.dead_letter_keep_bytes), []
    for msg in messages:
        value = msg.value()
        partition, offset = msg.partition() or 0, msg.offset() or 0
        refused = _refusal(value, lim)
        event = None
        if refused is None:
            try:
                event = RawEvent.model_validate_json(value or b"")
            except ValidationError as exc:
                refused = _explain(exc, value or b"")
            else:
                refused = _too_big(event, len(value or b""), lim)
        if refused is not None:
            reason, code = refused
            dead.append(
                DeadLetter.of(
                    reason,
                    code,
                    msg.topic() or "",
                    partition,
                    offset,
                    msg.key(),
                    value,
                    worker,
                    keep=lim.dead_letter_keep_bytes,
                )
            )
            continue
        assert event is not None
        batch.events.append(event)
        batch.partitions.append(partition)
        batch.offsets.append(offset)
        batch.messages.append(msg)
    if len(batch):
        horizon = (time.time() if now is None else now) + lim.max_future_seconds
        times = batch.event_times()
        future = np.flatnonzero(times > horizon)
        if len(future):
            dead += [
                batch.dead_letter(
                    int(i),
                    f"event time {batch.events[i].ts.isoformat()} is more than "
                    f"{lim.max_future_seconds:g}s ahead of the wall clock",
                    "future_event",
                    worker,
                )
                for i in future
            ]
            batch = batch.subset(np.flatnonzero(times <= horizon).tolist())
    return batch, dead


def _refusal(value: bytes | None, lim: InputLimits) -> tuple[str, str] | None:
    """Refused before parsing: no value, or too many bytes to parse at all."""
    if not value:
        return f"empty message ({'null' if value is None else 'zero-length'} value)", "empty"
    if len(value) > lim.max_event_bytes:
        return f"{len(value)} bytes, more than max_event_bytes={lim.max_event_bytes}", "event_too_large"
    return None


def _explain(exc: ValidationError, value: bytes) -> tuple[str, str]:
    reason, code = explain(exc)
    if code == "invalid_json":
        if "recursion limit exceeded" in reason:
            return f"nested too deeply: {reason}", "too_deep"
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as bad:
            return f"binary data, not UTF-8 JSON (byte {bad.start})", "invalid_json_binary"
    return reason, code


def _too_big(event: RawEvent, size: int, lim: InputLimits) -> tuple[str, str] | None:
    """Valid, but past a limit. Cheap: a string longer than the limit needs a message as long."""
    features = event.features
    if len(features) > lim.max_features:
        return f"{len(features)} features, more than max_features={lim.max_features}", "too_many_features"
    if size > lim.max_string_length:
        for name, v in features.items():
            if isinstance(v, str) and len(v) > lim.max_string_length:
                return (
                    f"features.{name[:100]}: {len(v)} characters, more than "
                    f"max_string_length={lim.max_string_length}",
                    "feature_too_long",
                )
    return None
