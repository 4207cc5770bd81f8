"""The Faust retrainer as users run it (its own process), on the real broker and Redis."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from detectors.incidents import IncidentBook, IncidentEvent
from detectors.signals import DriftSignal
from driftline.settings import Settings
from driftline.training_data import synthetic_training_set
from driftline.wiring import model_registry
from inference.training import register_trained, train_model
from stream.offsets import end_offsets
from stream.topics import Topics
from tests.helpers import consume_all
from tests.integration.loop_support import model_steps, running_loop, spawn_retrainer, stop_process
from tests.integration.worker_support import produce_events, register, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _alert(feature: str, version: int = 1) -> bytes:
    signal = DriftSignal(
        detector="psi",
        feature=feature,
        statistic=0.5,
        threshold=0.2,
        severity="critical",
        window_start_ts=0.0,
        window_end_ts=300.0,
        window_start_index=0,
        window_end_index=1,
        n_window=2000,
        n_reference=5000,
        message=f"{feature}: PSI 0.5 >= 0.2",
    )
    [opened] = IncidentBook().observe([signal], model="fraud", version=version)
    return opened.model_dump_json().encode()


def _send_alerts(s: Settings, values: list[bytes]) -> None:
    p = Producer(s.kafka_client_config())
    for v in values:
        p.produce(Topics(s.topic_prefix).alerts, v, b"fraud")
    assert p.flush(15) == 0


def _skip_of(s: Settings, incident_id: str) -> dict[str, Any] | None:
    for e in model_steps(s, 1, 5):
        if e["kind"] == "retrain_skipped" and e["detail"]["trigger"].get("incident_id") == incident_id:
            return e
    return None


def _kinds(s: Settings) -> Counter[str]:
    return Counter(e["kind"] for e in model_steps(s, 1, 5))


def test_one_incident_starts_one_job_and_the_cooldown_survives_a_restart(
    own_settings: Settings, tmp_path: Path
) -> None:
    s = own_settings
    register(s)  # production fraud:1: the alerts are about it
    log = tmp_path / "retrainer.log"
    retrainer = spawn_retrainer(s, log)
    try:
        # One incident, its opening delivered three times (at-least-once redelivery), and two
        # incidents of the other model version (a replaced one) or not critical: one job.
        first = _alert("amount")
        _send_alerts(s, [first, first, _alert("merchant_risk", version=7), first])
        # No events in this test's topics: the job fails ("no events to train on"), but it ran.
        wait_until(lambda: _kinds(s)["retrain_failed"] == 1 and _kinds(s)["retrain_skipped"] == 2, 120, 1.0)
        stop_process(retrainer)
        retrainer = spawn_retrainer(s, log)  # a new instance: its table comes from the changelog
        late = _alert("merchant_category")
        _send_alerts(s, [late])
        late_id = IncidentEvent.model_validate_json(late).incident_id
        # (A restart may re-read alerts Faust had not committed yet: at-least-once, also skipped.)
        wait_until(lambda: _skip_of(s, late_id) is not None, 120, 1.0)
    except AssertionError:
        print(log.read_text()[-5000:])
        raise
    finally:
        stop_process(retrainer)
    steps = model_steps(s, 1, 5)
    kinds = Counter(e["kind"] for e in steps)
    assert kinds["retrain_started"] == 1, kinds
    skip = _skip_of(s, late_id)
    assert skip is not None and "cooldown" in skip["reason"], skip
    again = _skip_of(s, IncidentEvent.model_validate_json(first).incident_id)
    assert again is not None and "already" in again["reason"], again


def test_an_alert_faust_fetched_and_dropped_is_read_again(own_settings: Settings, tmp_path: Path) -> None:
    """Faust's consumer stall, injected: the alert is fetched and never reaches the agent; the
    retrainer's stall watch sees it wait uncommitted and re-reads it: the incident gets its job."""
    s = own_settings.model_copy(update={"retrainer_stall_seconds": 3.0})
    register(s)
    log = tmp_path / "retrainer.log"
    retrainer = spawn_retrainer(s, log, Path(__file__).with_name("stalling_retrainer.py"))
    try:
        _send_alerts(s, [_alert("amount")])
        wait_until(lambda: _kinds(s)["retrain_failed"] == 1, 120, 1.0)  # no events: its job fails
    except AssertionError:
        print(log.read_text()[-5000:])
        raise
    finally:
        stop_process(retrainer)
    text = log.read_text()
    assert "fault injected: dropped" in text  # the fault happened: without the watch, no job
    assert "a Faust consumer stall" in text and "re-reading them from the committed offset" in text
    assert _kinds(s)["retrain_started"] == 1


def test_bad_canary_is_rolled_back_with_its_evidence(own_settings: Settings, tmp_path: Path) -> None:
    s = own_settings.model_copy(update={"rollout_min_outcomes": 300, "drift_window_seconds": 0.0})
    register(s)  # a good production fraud:1
    data = synthetic_training_set(4000, seed=5)
    shuffled = np.random.default_rng(0).permutation(data.labels)
    bad = train_model(data.numeric, data.categorical, shuffled, data.ts, seed=5)
    registry = model_registry(s)
    candidate = register_trained(registry, "fraud", bad, "candidate")
    registry.canary("fraud", candidate.version, 0.5)
    with running_loop(s, tmp_path / "retrainer.log"):
        produce_events(s, 4000)
        wait_until(lambda: registry.deployment("fraud").canary is None, 180, 1.0)
    dep = registry.deployment("fraud")
    assert dep.production is not None and dep.production.version == 1
    assert registry.get("fraud", candidate.version).stage == "archived"
    decided = [e for e in model_steps(s) if e["kind"] == "rollout_decided"]
    assert len(decided) == 1 and decided[0]["detail"]["action"] == "rollback", decided
    evidence = decided[0]["detail"]["evidence"]
    assert evidence["candidate_error_rate"] > evidence["production_error_rate"]
    assert evidence["p_worse"] < 0.05 or evidence["candidate_error_rate"] > 0.5, evidence
    rolled = [e for e in model_steps(s) if e["kind"] == "rolled_back"]
    assert rolled and rolled[0]["detail"]["p_worse"] == evidence["p_worse"]  # the registry keeps it


def test_no_drift_in_200k_events_retrains_nothing(own_settings: Settings, tmp_path: Path) -> None:
    s = own_settings  # the worker's detectors on, with their defaults
    register(s)
    log = tmp_path / "retrainer.log"
    with running_loop(s, log) as joiner:
        outcomes = joiner.joiner.metrics.outcomes
        produce_events(s, 200_000, seed=7)
        wait_until(lambda: outcomes.labels("fraud", "1", "production")._value.get() >= 200_000, 600, 1.0)
        topics = Topics(s.topic_prefix)
        # The retrainer has read every alert and trigger (Faust commits every few seconds).
        wait_until(lambda: all(_caught_up(s, t) for t in (topics.alerts, topics.retrain)), 120, 1.0)
    kinds = Counter(e["kind"] for e in model_steps(s, 1, 5))
    assert kinds["retrain_started"] == 0, (kinds, log.read_text()[-3000:])
    assert model_registry(s).deployment("fraud").production.version == 1  # type: ignore[union-attr]


def _caught_up(s: Settings, topic: str) -> bool:
    c = Consumer({**s.kafka_client_config(), "group.id": f"{s.topic_prefix}-retrainer"})
    try:
        ends = end_offsets(c, topic)
        committed = c.committed([TopicPartition(topic, tp.partition) for tp in ends], timeout=10)
        return all(max(cm.offset, 0) >= end.offset for cm, end in zip(committed, ends, strict=True))
    finally:
        c.close()


def test_good_shadow_is_promoted_on_the_same_events(own_settings: Settings, tmp_path: Path) -> None:
    s = own_settings.model_copy(update={"drift_window_seconds": 0.0})
    register(s)  # production fraud:1
    registry = model_registry(s)
    shadow = register(s, stage="candidate", seed=1)  # as good: trained on other data, same concept
    registry.shadow("fraud", shadow.version)
    with running_loop(s, tmp_path / "retrainer.log"):
        produce_events(s, 6000)
        wait_until(lambda: registry.deployment("fraud").shadow is None, 180, 1.0)
    dep = registry.deployment("fraud")
    assert dep.production is not None and dep.production.version == shadow.version
    decided = [e for e in model_steps(s) if e["kind"] == "rollout_decided"]
    assert [d["detail"]["action"] for d in decided] == ["promote"], decided
    evidence = decided[0]["detail"]["evidence"]
    assert min(evidence["candidate_outcomes"], evidence["production_outcomes"]) >= s.rollout_min_outcomes
    # The shadow's evidence is its outcomes on the very events production served.
    outcomes = [r.json() for r in consume_all(s, Topics(s.topic_prefix).outcomes, 1, 5)]
    shadow_events = {o["event_id"] for o in outcomes if o["version"] == shadow.version and not o["served"]}
    served_events = {o["event_id"] for o in outcomes if o["version"] == 1 and o["served"]}
    assert shadow_events and len(shadow_events - served_events) <= len(shadow_events) // 20
