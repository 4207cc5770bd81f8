"""The outcome joiner on the real broker and Redis: labels meet predictions whichever comes first."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from confluent_kafka import Producer

from driftline.loop import build_joiner
from driftline.settings import Settings
from stream.outcomes import JoinConfig
from stream.topics import Topics
from tests.helpers import consume_all

pytestmark = pytest.mark.integration


def _prediction(event_id: str, score: float, arm: str = "production", version: int = 1) -> bytes:
    shadow = arm == "shadow"
    return orjson.dumps(
        {
            "event_id": event_id,
            "entity_id": f"card-{event_id}",
            "ts": "2026-01-01T00:00:00Z",
            "model": "fraud",
            "version": version,
            "arm": arm,
            "score": score,
            "predicted": int(score >= 0.5),
            "served": not shadow,
            "shadow": shadow,
            "processing_ms": 1.0,
            "source_partition": 0,
            "source_offset": 0,
        }
    )


def _label(event_id: str, label: object) -> bytes:
    return orjson.dumps({"event_id": event_id, "label": label, "ts": "2026-01-01T00:01:00Z"})


def _send(s: Settings, topic: str, items: list[tuple[str, bytes]]) -> None:
    p = Producer(s.kafka_client_config())
    for key, value in items:
        p.produce(topic, value, key.encode())
    assert p.flush(15) == 0


def test_labels_join_predictions_in_either_order_once_each(own_settings: Settings) -> None:
    s = own_settings
    topics = Topics(s.topic_prefix)
    # e1: prediction first; e2: label first; e3: production + shadow; e4: never labeled;
    # e5: label without prediction; e6: a label that is not binary -> dead letter.
    _send(s, topics.predictions, [("e1", _prediction("e1", 0.9)), ("e3", _prediction("e3", 0.2))])
    _send(s, topics.predictions, [("e3", _prediction("e3", 0.7, arm="shadow", version=2))])
    _send(s, topics.labels, [("e2", _label("e2", 0)), ("e5", _label("e5", "true")), ("e6", _label("e6", 7))])
    cfg = JoinConfig(group_id=f"{s.topic_prefix}-outcomes", label_wait_seconds=3, exit_when_idle=3.0)
    joiner = build_joiner(s, cfg)
    thread = threading.Thread(target=joiner.run, daemon=True)
    thread.start()
    time.sleep(1.0)
    _send(s, topics.predictions, [("e2", _prediction("e2", 0.4)), ("e4", _prediction("e4", 0.6))])
    _send(s, topics.labels, [("e1", _label("e1", 1)), ("e3", _label("e3", "0"))])
    thread.join(60)
    assert not thread.is_alive()

    outcomes = [r.json() for r in consume_all(s, topics.outcomes, 4, 20)]
    got = sorted((o["event_id"], o["version"], o["arm"], o["label"], o["correct"]) for o in outcomes)
    assert got == [
        ("e1", 1, "production", 1, True),
        ("e2", 1, "production", 0, True),
        ("e3", 1, "production", 0, True),
        ("e3", 2, "shadow", 0, False),
    ]
    dead = [r.json() for r in consume_all(s, topics.dlq, 1, 10)]
    assert [(d["reason_code"], d["source_topic"]) for d in dead] == [("invalid_label", topics.labels)]
    assert "0/1" in dead[0]["reason"] and dead[0]["source_offset"] >= 0

    time.sleep(3.5)  # past the wait: e4's prediction and e5's label are counted, not lost
    joiner._sweep(force=True)
    m = joiner.metrics
    assert m.unlabeled._value.get() == 1
    assert m.unmatched._value.get() == 1
    assert m.outcomes.labels("fraud", "1", "production")._value.get() == 3
    assert m.accuracy.labels("fraud", "1")._value.get() == 1.0


def test_a_joined_pair_keeps_its_keys_only_for_stragglers(own_settings: Settings) -> None:
    """Redis holds what still waits: a joined pair's keys expire after ``matched_keep_seconds``
    (a shadow's prediction arriving within it still joins), a waiting half after the full wait."""
    s = own_settings
    topics = Topics(s.topic_prefix)
    cfg = JoinConfig(group_id=f"{s.topic_prefix}-outcomes", label_wait_seconds=3600, matched_keep_seconds=30)

    def join_all(expected: int) -> list[dict[str, object]]:
        cfg.exit_when_idle = 3.0
        joiner = build_joiner(s, cfg)
        joiner.run()
        return [r.json() for r in consume_all(s, topics.outcomes, expected, 20)]

    _send(s, topics.predictions, [("e1", _prediction("e1", 0.9)), ("e2", _prediction("e2", 0.8))])
    _send(s, topics.labels, [("e1", _label("e1", 1))])
    assert [o["event_id"] for o in join_all(1)] == ["e1"]
    r = build_joiner(s, cfg).r
    ns = s.topic_prefix
    assert 0 < r.ttl(f"{ns}:join:p:e1") <= 30 and 0 < r.ttl(f"{ns}:join:l:e1") <= 30
    assert r.ttl(f"{ns}:join:p:e2") > 3000  # still waiting for its label: the whole wait

    _send(s, topics.predictions, [("e1", _prediction("e1", 0.3, arm="shadow", version=2))])
    got = sorted((o["event_id"], o["arm"]) for o in join_all(2))
    assert got == [("e1", "production"), ("e1", "shadow")]  # the straggler met the kept label
    assert 0 < r.ttl(f"{ns}:join:p:e1") <= 30  # written again by the straggler, shortened again
