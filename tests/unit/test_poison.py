"""Hostile input and refused outputs, without a broker: decode limits, bounded dead letters, and
`BatchOutputs` redoing a failed batch's outputs once per failure (a fake producer)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from stream.dead_letter import DeadLetter
from stream.decode import InputLimits, decode_batch
from stream.outputs import BatchOutputs, GaveUp, Output
from tests.unit.test_decode import FakeMessage

NOW = 1_767_225_600.0  # 2026-01-01


def event(features: str = '{"a":1}', ts: str = "2026-01-01T00:00:00Z", eid: str = "e") -> bytes:
    return b'{"event_id":"%s","entity_id":"x","ts":"%s","features":%s}' % (
        eid.encode(),
        ts.encode(),
        features.encode(),
    )


LIMITS = InputLimits(max_event_bytes=4096, max_features=5, max_string_length=100, max_future_seconds=60)
HOSTILE: list[tuple[bytes | None, str]] = [
    (None, "empty"),
    (b"", "empty"),
    (event('{"s":"%s"}' % ("x" * 5000)), "event_too_large"),
    (event("{" + ",".join(f'"f{i}":{i}' for i in range(6)) + "}"), "too_many_features"),
    (event('{"s":"%s"}' % ("x" * 101)), "feature_too_long"),
    (event('{"a":' + "[" * 1000 + "]" * 1000 + "}"), "too_deep"),
    (b"\xff\xfe\x00\x81garbage", "invalid_json_binary"),
    (b"{not json", "invalid_json"),
    (event(ts="9999-12-31T23:59:59Z"), "future_event"),
    (event(ts="2026-01-01T00:01:01Z"), "future_event"),  # 61 s ahead: just past the skew
    (event('{"a":[1]}'), "schema_feature_type"),  # booleans are features; lists are not
    (b'{"event_id":"e","ts":"2026-01-01T00:00:00Z","features":{}}', "schema_missing"),
]


def test_each_kind_of_hostile_input_gets_its_own_reason_code_and_valid_ones_pass() -> None:
    good = [event(ts="2026-01-01T00:00:59Z", eid="ok1"), event('{"s":"%s"}' % ("y" * 100), eid="ok2")]
    values = [v for v, _ in HOSTILE] + good
    msgs = [cast(Message, FakeMessage(v, i)) for i, v in enumerate(values)]
    batch, dead = decode_batch(msgs, "w", LIMITS, now=NOW)
    assert [e.event_id for e in batch.events] == ["ok1", "ok2"]
    assert batch.event_times().tolist() == [NOW + 59, NOW]
    by_offset = {d.source_offset: d.reason_code for d in dead}
    assert by_offset == {i: code for i, (_, code) in enumerate(HOSTILE)}
    for d in dead:
        assert d.reason and "\n" not in d.reason and len(d.reason) <= 1000


def test_a_dead_letter_keeps_the_original_once_up_to_a_bound_with_size_and_digest() -> None:
    big = b'{"text": "' + "é".encode() * 400_000 + b'"}'  # 800 kB of 2-byte characters
    d = DeadLetter.of("too big", "event_too_large", "t", 2, 9, b"k" * 5000, big, "w", keep=1001)
    assert d.original_encoding == "utf-8" and d.original_truncated
    assert big.startswith(d.original()) and len(d.original()) == 1000  # the cut character dropped
    assert d.original_size == len(big) and d.original_sha256 == hashlib.sha256(big).hexdigest()
    assert d.key is not None and len(d.key) == 1024
    data = d.to_json()
    assert len(data) < 4000 and b"original_b64" not in data and b"original_text" not in data
    assert DeadLetter.model_validate_json(data) == d


@pytest.mark.parametrize(
    "raw",
    [bytes(range(256)) * 1000, b"\x01" * 300_000, b"\x00\xff" * 150_000],
    ids=["binary", "control-chars", "nul-ff"],
)
def test_a_dead_letter_is_bounded_whatever_the_bytes(raw: bytes) -> None:
    keep = 256 * 1024
    d = DeadLetter.of("x" * 10_000, "invalid_json", "t", 0, 0, b"\x00" * 10_000, raw, "w", keep=keep)
    assert len(d.to_json()) < keep * 4 // 3 + 16_000  # far below the broker's 1 MB
    assert d.original() == raw[:keep]
    stripped = d.without_original("refused")
    assert stripped.original() == b"" and len(stripped.to_json()) < 16_000
    assert stripped.original_sha256 == d.original_sha256 and stripped.original_truncated


# ---- BatchOutputs with a fake producer --------------------------------------------------------
@dataclass
class FakeKafkaMessage:
    _topic: str
    _value: bytes

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value


@dataclass
class FakeProducer:
    """Records produced messages; delivery fails for sizes at or over ``broker_limit`` and for the
    first ``fail_deliveries`` messages; ``fail_commits`` transactions fail at commit."""

    broker_limit: int = 10_000
    client_limit: int = 50_000
    fail_deliveries: int = 0
    fail_commits: int = 0
    written: list[tuple[str, bytes]] = field(default_factory=list)  # durable (or committed)
    open_txn: list[tuple[str, bytes]] = field(default_factory=list)
    queued: list[tuple[Any, str, bytes]] = field(default_factory=list)
    transactional: bool = False
    commits: int = 0
    aborts: int = 0

    def produce(self, topic: str, value: bytes, key: bytes | None = None, on_delivery: Any = None) -> None:
        if len(value) >= self.client_limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "client limit"))
        self.queued.append((on_delivery, topic, value))

    def poll(self, _timeout: float = 0) -> int:
        return self.flush()

    def flush(self, _timeout: float = 0) -> int:
        while self.queued:
            cb, topic, value = self.queued.pop(0)
            err = None
            if len(value) >= self.broker_limit:
                err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "broker limit")
            elif self.fail_deliveries > 0:
                self.fail_deliveries -= 1
                err = KafkaError(KafkaError._MSG_TIMED_OUT, "timed out")
            if err is None:
                (self.open_txn if self.transactional else self.written).append((topic, value))
            elif self.transactional:
                self.doomed = True
            cb(err, FakeKafkaMessage(topic, value))
        return 0

    def begin_transaction(self) -> None:
        self.transactional, self.open_txn, self.doomed = True, [], False

    def send_offsets_to_transaction(self, *_a: Any) -> None:
        pass

    def commit_transaction(self, _timeout: float = 0) -> None:
        self.flush()
        if not self.doomed and self.fail_commits > 0:
            self.fail_commits -= 1
            self.doomed = True
        if self.doomed:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit failed", txn_requires_abort=True))
        self.written += self.open_txn
        self.commits += 1

    def abort_transaction(self, _timeout: float = 0) -> None:
        self.open_txn, self.queued = [], []
        self.aborts += 1


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[list[TopicPartition]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(offsets)

    def consumer_group_metadata(self) -> object:
        return object()


def outputs_of(producer: FakeProducer, transactional: bool) -> tuple[BatchOutputs, CollectorRegistry]:
    registry = CollectorRegistry()
    sender = BatchOutputs(
        cast(Any, SimpleNamespace(producer=producer, consumer=FakeConsumer())),
        transactional=transactional,
        dlq_topic="dlq",
        worker="w",
        retries=Counter("retries", "r", registry=registry),
        refused=Counter("refused", "r", ["topic", "action"], registry=registry),
        stopping=lambda: False,
        keep=64 * 1024,
    )
    return sender, registry


def batch_outputs() -> list[Output]:
    source = cast(Message, FakeMessage(event(), 7))
    letter = DeadLetter.of("bad", "invalid_json", "t", 3, 8, b"k", b"z" * 20_000, "w")
    return [
        *[Output("predictions", b"k", b"p%d" % i, source=source) for i in range(5)],
        Output("predictions", b"k", b"P" * 12_000, source=source),  # refused by the broker
        Output("dlq", b"k", letter.to_json(), letter=letter),  # refused by the broker too
        Output("alerts", b"a", b"A" * 60_000),  # refused by the client; nothing can stand in
    ]


def value_of(sender: BatchOutputs, registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels or None) or 0.0


@pytest.mark.parametrize("transactional", [False, True], ids=["at-least-once", "exactly-once"])
def test_oversized_outputs_are_replaced_and_failures_redone_once_each(transactional: bool) -> None:
    producer = FakeProducer(fail_deliveries=2, fail_commits=1 if transactional else 0)
    sender, registry = outputs_of(producer, transactional)
    sender.deliver(batch_outputs(), [TopicPartition("t", 0, 9)])
    topics = [t for t, _ in producer.written]
    assert sorted(v for t, v in producer.written if t == "predictions") == [b"p%d" % i for i in range(5)]
    letters = [DeadLetter.model_validate_json(v) for t, v in producer.written if t == "dlq"]
    assert sorted(d.reason_code for d in letters) == ["invalid_json", "output_too_large"]
    assert all(len(v) < 10_000 for _, v in producer.written)
    assert "alerts" not in topics  # dropped, and counted
    assert value_of(sender, registry, "refused_total", topic="alerts", action="dropped") == 1
    assert value_of(sender, registry, "refused_total", topic="dlq", action="replaced") == 1
    assert value_of(sender, registry, "refused_total", topic="predictions", action="replaced") == 1
    assert len(producer.written) == len(set(producer.written)) == 7  # nothing written twice
    retries = value_of(sender, registry, "retries_total")
    if transactional:
        # attempt 1: timed-out deliveries and the size refusals; attempt 2: the injected commit failure
        assert (retries, producer.aborts, producer.commits) == (2, 2, 1)
    else:
        assert retries == 1  # one redo: the two timed out and the two refused, together


def test_a_batch_whose_group_moved_on_is_given_up() -> None:
    producer = FakeProducer()
    sender, _ = outputs_of(producer, transactional=True)

    def rebalanced(_timeout: float = 0) -> None:
        raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID, "fenced from the group"))

    producer.commit_transaction = rebalanced  # type: ignore[method-assign]
    with pytest.raises(GaveUp):
        sender.deliver([Output("predictions", None, b"p")], [TopicPartition("t", 0, 1)])
    assert producer.aborts == 1 and producer.written == []
