from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from stream.events import LabelEvent, RawEvent, decode_event, decode_label, encode_event, explain


def test_round_trip_keeps_every_field() -> None:
    event = RawEvent(
        event_id="e-1",
        entity_id="card-1",
        ts=datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
        features={"amount": 12.5, "n": 3, "country": "DE", "device": None},
    )
    wire = encode_event(event)
    assert orjson.loads(wire)["ts"] == "2026-03-01T12:30:00Z"
    assert decode_event(wire) == event


def test_naive_and_offset_timestamps_become_utc() -> None:
    naive = decode_event(b'{"event_id":"a","entity_id":"b","ts":"2026-01-01T10:00:00","features":{}}')
    offset = decode_event(b'{"event_id":"a","entity_id":"b","ts":"2026-01-01T12:00:00+02:00","features":{}}')
    assert naive.ts == offset.ts == datetime(2026, 1, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"entity_id":"b","ts":"2026-01-01T00:00:00Z","features":{}}', "event_id"),
        (b'{"event_id":"a","entity_id":"","ts":"2026-01-01T00:00:00Z","features":{}}', "entity_id"),
        (b'{"event_id":"a","entity_id":"b","ts":"yesterday","features":{}}', "ts"),
        (
            b'{"event_id":"a","entity_id":"b","ts":"2026-01-01T00:00:00Z","features":{"x":[1]}}',
            "features",
        ),
        (b'{"event_id":"a","entity_id":"b","ts":"2026-01-01T00:00:00Z","features":{},"y":1}', "y"),
        (b"not json", "json"),
    ],
)
def test_invalid_events_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode_event(payload)
    assert reason in explain(info.value)[0].lower()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_rejected(value: float) -> None:
    with pytest.raises(ValidationError) as info:
        RawEvent(event_id="a", entity_id="b", ts=datetime.now(UTC), features={"x": value})
    assert explain(info.value) == (
        "features.x: NaN and infinity are not allowed, send null",
        "schema_feature_type",
    )
    wire = b'{"event_id":"a","entity_id":"b","ts":"2026-01-01T00:00:00Z","features":{"x":NaN}}'
    with pytest.raises(ValidationError):
        decode_event(wire)


def test_booleans_are_features_and_stay_booleans() -> None:
    event = decode_event(
        b'{"event_id":"a","entity_id":"b","ts":"2026-01-01T00:00:00Z","features":{"x":true,"y":false,"z":1}}'
    )
    assert event.features == {"x": True, "y": False, "z": 1}
    assert [type(v) for v in event.features.values()] == [bool, bool, int]
    assert decode_event(encode_event(event)) == event


def test_strict_types_are_not_coerced() -> None:
    event = decode_event(
        b'{"event_id":"a","entity_id":"b","ts":"2026-01-01T00:00:00Z","features":{"x":"1","y":2}}'
    )
    assert event.features == {"x": "1", "y": 2}


def test_label_event() -> None:
    label = decode_label(b'{"event_id":"e-1","label":1,"ts":"2026-01-01T00:00:00Z"}')
    assert label == LabelEvent(event_id="e-1", label=1, ts=datetime(2026, 1, 1, tzinfo=UTC))
    assert decode_label(encode_event(label)) == label
