"""Batch decoding and dead letters, with stand-in messages (no broker)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import Message

from stream.dead_letter import DeadLetter
from stream.decode import decode_batch


@dataclass
class FakeMessage:
    _value: bytes | None
    _offset: int
    _key: bytes | None = b"k"
    _partition: int = 3

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "t.events"


def _msgs(values: list[bytes | None]) -> list[Message]:
    return [cast(Any, FakeMessage(v, i)) for i, v in enumerate(values)]


GOOD = b'{"event_id":"%d","entity_id":"e%d","ts":"2026-01-01T00:00:0%dZ","features":{"a":%d,"c":"x"}}'


def test_valid_events_become_columns_in_order() -> None:
    batch, dead = decode_batch(_msgs([GOOD % (i, i, i, i) for i in range(3)]), worker="w")
    assert dead == []
    assert batch.entity_ids == ["e0", "e1", "e2"]
    assert batch.offsets == [0, 1, 2] and batch.partitions == [3, 3, 3]
    assert batch.columns(["a", "c", "missing"]) == {"a": [0, 1, 2], "c": ["x"] * 3, "missing": [None] * 3}
    assert batch.event_times().tolist() == [1767225600.0, 1767225601.0, 1767225602.0]


def test_invalid_events_become_dead_letters_with_source_and_bytes() -> None:
    values: list[bytes | None] = [
        GOOD % (1, 1, 1, 1),
        b"\x00\x01 nope",
        b'{"event_id":"2","entity_id":"e","ts":"2026-01-01T00:00:00Z","features":{"a":[1]}}',
        None,
        b'{"event_id":"3","entity_id":"e","ts":"2026-01-01T00:00:00Z"}',
    ]
    batch, dead = decode_batch(_msgs(values), worker="w-1")
    assert len(batch) == 1 and [d.source_offset for d in dead] == [1, 2, 3, 4]
    binary, listed, empty, missing = dead
    assert binary.reason_code == "invalid_json" and binary.original() == b"\x00\x01 nope"
    assert "not list" in listed.reason and listed.reason_code == "schema_feature_type"
    assert empty.reason_code == "empty" and empty.original() == b""
    assert missing.reason.startswith("features: Field required") and missing.reason_code == "schema_missing"
    for d in dead:
        assert d.source_topic == "t.events" and d.source_partition == 3 and d.worker == "w-1"
        assert DeadLetter.model_validate_json(d.to_json()) == d  # round-trips as JSON
