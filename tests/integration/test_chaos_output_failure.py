"""Chaos: output failures (injected into the worker's real producer, on the real broker) while it
scores 20,000 drifting events with hostile ones among them. Exactly-once: a ``read_committed``
reader sees every prediction, dead letter and alert exactly once. At-least-once: every output
exists. Both: each failure is redone exactly once (counted), and no aggregate is double-counted."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from detectors.alerts import DriftAlert
from detectors.incidents import IncidentEvent
from driftline.settings import Settings
from stream.dead_letter import DeadLetter
from stream.synthetic import DriftSchedule
from stream.topics import Topics
from stream.worker import Worker
from tests.helpers import consume_all
from tests.integration.chaos_support import count_24h_mismatches, produce_all, valid_events
from tests.integration.worker_support import dlq, drain, predictions, register, served_counts, start_worker

pytestmark = pytest.mark.integration

FIRST_FAILED = 5  # the first transactions / flush rounds that fail, besides those carrying an alert


class FlakyProducer:
    """The worker's real producer, with failures injected.

    Exactly-once: ``commit_transaction`` fails (without committing; the worker aborts) for the
    first `FIRST_FAILED` transactions and for every transaction carrying an alert - once each,
    its redo goes through. At-least-once: in the first `FIRST_FAILED` flush rounds every 50th
    message, and every alert the first time, is not produced and reported as failed.
    """

    def __init__(self, real: Producer) -> None:
        self.real = real
        self.injected = 0  # failed attempts caused here: each must be redone exactly once
        self.alert_failures = 0  # of those, attempts that carried an alert
        self._alert_in_txn = False
        self._redo = False
        self._commits = self._rounds = self._produced = 0
        self._dropped: list[Any] = []
        self._alerts_dropped: set[bytes] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def begin_transaction(self) -> None:
        self._alert_in_txn = False
        self.real.begin_transaction()

    def commit_transaction(self, timeout: float) -> None:
        self._commits += 1
        fail = not self._redo and (self._commits <= FIRST_FAILED or self._alert_in_txn)
        self._redo = fail
        if fail:
            self.injected += 1
            self.alert_failures += self._alert_in_txn
            raise KafkaException(
                KafkaError(
                    KafkaError._TIMED_OUT, "injected commit failure", retriable=True, txn_requires_abort=True
                )
            )
        self.real.commit_transaction(timeout)

    def produce(self, topic: str, value: bytes, key: bytes | None = None, on_delivery: Any = None) -> None:
        self._alert_in_txn |= topic.endswith((".signals", ".alerts"))
        self._produced += 1
        if not getattr(self, "transactional", False):
            drop = self._rounds < FIRST_FAILED and self._produced % 50 == 0
            if topic.endswith((".signals", ".alerts")) and value not in self._alerts_dropped:
                self._alerts_dropped.add(value)
                drop = self._alert_in_txn = True
            if drop:
                self._dropped.append(on_delivery)
                return
        self.real.produce(topic, value, key, on_delivery=on_delivery)

    def flush(self, timeout: float = -1) -> int:
        dropped, self._dropped = self._dropped, []
        for report in dropped:
            report(KafkaError(KafkaError._MSG_TIMED_OUT, "injected delivery failure"), None)
        if dropped:
            self.injected += 1
            self.alert_failures += self._alert_in_txn
            self._alert_in_txn = False
        self._rounds += 1
        return int(self.real.flush(timeout))


@pytest.mark.slow
@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_output_failures_are_redone_once_each_and_lose_or_repeat_nothing(
    own_settings: Settings, exactly_once: bool
) -> None:
    # 1000 s windows of ~2,000 events, covariate drift from event 10,000: alerts to redo.
    s = own_settings.model_copy(update={"drift_window_seconds": 1000.0, "drift_ks_sample_rate": 1.0})
    topics = Topics(s.topic_prefix)
    register(s)
    n, n_bad = 20_000, 400
    valid = valid_events(n, seed=9, entities=1000, gap=0.5, schedule=DriftSchedule(covariate_at=10_000))
    items: list[tuple[bytes | None, bytes | None]] = []
    for i, (entity, value) in enumerate(valid):
        items.append((entity.encode(), value))
        if i % (n // n_bad) == 0:
            items.append((b"bad", b'{"event_id":"bad-%d"}' % i))
    produce_all(s, topics.events, items)

    flaky: list[FlakyProducer] = []

    def inject(worker: Worker) -> None:
        producer = FlakyProducer(worker.producer)
        producer.transactional = exactly_once  # type: ignore[attr-defined]
        worker.producer = producer  # type: ignore[assignment]
        flaky.append(producer)

    running = start_worker(s, prepare=inject, exactly_once=exactly_once, batch_size=500)
    drain(s, running, timeout=300)  # every event committed (redone failures included): no idle wait
    injected, alert_failures = flaky[0].injected, flaky[0].alert_failures

    counts = served_counts(predictions(s, n))  # consume_all reads read_committed
    ids = {orjson.loads(v)["event_id"] for _, v in valid}
    assert set(counts) == ids, f"{len(ids - set(counts))} predictions missing"
    letters = Counter(
        (d.source_partition, d.source_offset)
        for d in (DeadLetter.model_validate_json(r.value) for r in dlq(s, n_bad))
    )
    assert len(letters) == n_bad
    alerts = Counter(
        DriftAlert.model_validate_json(r.value).id for r in consume_all(s, topics.signals, 1, 20)
    )
    incidents = Counter(
        IncidentEvent.model_validate_json(r.value).id for r in consume_all(s, topics.alerts, 1, 20)
    )
    decided = running.worker.metrics.registry.get_sample_value
    produced_alerts = sum(
        decided("driftline_drift_alerts_total", {"severity": sev, "detector": det}) or 0
        for sev in ("warning", "critical")
        for det in ("psi", "ks", "missing_rate", "adwin", "cusum")
    )
    assert alerts and len(alerts) == produced_alerts, (len(alerts), produced_alerts)
    duplicates = {
        "predictions": sum(c - 1 for c in counts.values()),
        "dead letters": sum(c - 1 for c in letters.values()),
        "alerts": sum(c - 1 for c in alerts.values()),
        "incident events": sum(c - 1 for c in incidents.values()),
    }
    retries = running.worker.metrics.retries._value.get()
    print(f"\n{injected} injected failures, {retries} redos, duplicates {duplicates}, {len(alerts)} alerts")
    assert injected >= 3 and alert_failures >= 1  # the first ones and at least one with an alert
    assert retries == injected  # each failure redone once: no more, no less
    # Exactly-once: aborted attempts are invisible. At-least-once: only the outputs reported
    # failed are produced again, and these (injected) were never written.
    assert duplicates == {"predictions": 0, "dead letters": 0, "alerts": 0, "incident events": 0}
    assert count_24h_mismatches(s, Counter(e for e, _ in valid)) == {}
