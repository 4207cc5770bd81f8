"""Chaos: 10,000 hostile messages of 14 kinds among 20,000 valid events (feature store and drift
detectors on). The worker never stops, every valid event is scored once, every entity's online
count is exact, and every hostile message is one bounded dead letter with its reason code."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from driftline.settings import Settings
from stream.dead_letter import DeadLetter
from stream.topics import Topics
from tests.integration.chaos_support import (
    BROKER_LIMIT,
    allow_large_messages,
    count_24h_mismatches,
    produce_all,
    valid_events,
)
from tests.integration.worker_support import dlq, predictions, register, served_counts, start_worker

pytestmark = pytest.mark.integration

TS = b'"ts":"2023-11-14T22:13:20Z"'
HEAD = b'{"event_id":"bad","entity_id":"x",' + TS + b',"features":'
SOON = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ").encode()

# Each hostile message once, whatever its size: (kind, value, reason code).
ONCE: list[tuple[str, bytes, str]] = [
    ("2 MB", HEAD + b'{"pad":"' + b"x" * 2_000_000 + b'"}}', "event_too_large"),
    ("600 kB invalid", b'{"event_id":"bad","features":{"note":"' + b"y" * 600_000, "invalid_json"),
    (
        "100,000 features",
        HEAD + b"{" + b",".join(b'"%x":0' % i for i in range(100_000)) + b"}}",
        "too_many_features",
    ),
    ("1 MB string", HEAD + b'{"s":"' + b"z" * 1_000_000 + b'"}}', "feature_too_long"),
    ("deep nesting", HEAD + b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}}", "too_deep"),
]
# Repeated until there are 10,000 hostile messages in all.
SMALL: list[tuple[str, bytes | None, str]] = [
    ("null value", None, "empty"),
    ("empty value", b"", "empty"),
    ("not JSON", b"{not json at all", "invalid_json"),
    ("not an object", b"[1,2,3]", "schema_model_type"),
    ("missing field", b'{"event_id":"m",' + TS + b',"features":{}}', "schema_missing"),
    ("list feature", HEAD + b'{"flag":[1,2]}}', "schema_feature_type"),  # booleans are features
    ("NaN feature", HEAD + b'{"amount":NaN}}', "schema_feature_type"),
    ("extra field", HEAD + b'{},"extra":1}', "schema_extra_forbidden"),
    (
        "long event id",
        b'{"event_id":"' + b"e" * 300 + b'","entity_id":"x",' + TS + b',"features":{}}',
        "schema_string_too_long",
    ),
    (
        "bad timestamp",
        b'{"event_id":"t","entity_id":"x","ts":"someday","features":{}}',
        "schema_datetime_from_date_parsing",
    ),
    ("3 days ahead", b'{"event_id":"f","entity_id":"x","ts":"' + SOON + b'","features":{}}', "future_event"),
    ("nested 300 deep", HEAD + b'{"a":' + b"[" * 300 + b"]" * 300 + b"}}", "too_deep"),
]


@pytest.mark.slow
def test_hostile_messages_never_stop_the_worker_nor_poison_state(own_settings: Settings) -> None:
    s = own_settings
    topics = Topics(s.topic_prefix)
    allow_large_messages(s, topics.events, 3_000_000)
    register(s)
    n_valid, n_bad = 20_000, 10_000
    rng = random.Random(12)
    valid = valid_events(n_valid, seed=5)
    victim, victim_at = valid[100][0], 100  # gets a year-9999 event right after its event #100

    # Valid events in order; a hostile message after every second one.
    items: list[tuple[bytes | None, bytes | None]] = []
    codes: list[str | None] = []  # per message: its expected reason code (None: valid)
    hostile: list[tuple[str, bytes | None, str]] = [(k, v, c) for k, v, c in ONCE]
    while len(hostile) < n_bad - 2:  # + binary garbage + the year-9999 event
        hostile.append(SMALL[len(hostile) % len(SMALL)])
    hostile.insert(
        rng.randrange(len(hostile)), ("binary", b"\xff" + rng.randbytes(300), "invalid_json_binary")
    )
    bad = iter(hostile)
    for i, (entity, value) in enumerate(valid):
        items.append((entity.encode(), value))
        codes.append(None)
        if i == victim_at:
            event = orjson.loads(value)
            event.update(event_id=f"y9999-{event['event_id']}", ts="9999-12-31T23:59:59Z")
            items.append((entity.encode(), orjson.dumps(event)))
            codes.append("future_event")
        elif i % 2 == 1:
            kind, raw, code = next(bad, ("", None, ""))
            if kind:
                items.append((f"bad-{kind}".encode(), raw))
                codes.append(code)
    assert sum(c is not None for c in codes) == n_bad and len(set(filter(None, codes))) >= 12
    sent = produce_all(s, topics.events, items, max_bytes=2_100_000)
    assert len(sent) == len(items)

    running = start_worker(s, batch_size=500)
    preds = predictions(s, n_valid, timeout=300)
    letters = dlq(s, n_bad, timeout=120)
    assert running.thread.is_alive() and not running.errors, running.errors  # never stopped
    running.stop()

    # Every valid event scored, once.
    counts = served_counts(preds)
    valid_ids = {orjson.loads(v)["event_id"] for _, v in valid}
    assert set(counts) == valid_ids, f"{len(valid_ids - set(counts))} valid events without a prediction"
    assert max(counts.values()) == 1

    # Every hostile message is one dead letter: its reason code, where it came from, bounded.
    expected = {
        (m.partition, m.offset): code for m, code in zip(sent, codes, strict=True) if code is not None
    }
    got: dict[tuple[int, int], str] = {}
    for record in letters:
        assert len(record.value) < BROKER_LIMIT, f"a dead letter of {len(record.value)} bytes"
        letter = DeadLetter.model_validate_json(record.value)
        assert letter.source_topic == topics.events and letter.reason
        assert (letter.source_partition, letter.source_offset) not in got, "a message dead-lettered twice"
        got[(letter.source_partition, letter.source_offset)] = letter.reason_code
    assert got == expected
    by_code = Counter(got.values())
    print(f"\n{n_valid} valid, {n_bad} hostile; dead letters by reason: {dict(sorted(by_code.items()))}")
    biggest = max(len(r.value) for r in letters)
    print(f"largest dead letter: {biggest} bytes (the largest input: {max(len(v or b'') for _, v in items)})")

    # The entity hit by the year-9999 event is still scored after it, and no count is off.
    at = next(m for m, (_, v) in zip(sent, items, strict=True) if v is not None and b"y9999-" in v)
    later = [p for p in preds if p["entity_id"] == victim and p["source_offset"] > at.offset]
    assert later, "the entity stopped being scored after its year-9999 event"
    assert later[0]["source_partition"] == at.partition
    assert count_24h_mismatches(s, Counter(e for e, _ in valid)) == {}
    assert running.worker.metrics.processed.labels("dlq")._value.get() == n_bad
