"""The loop after scoring, on the real broker and Redis: labels -> outcomes -> concept-drift alert
-> one retrain job (a real Faust retrainer process) -> candidate -> canary -> promoted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from driftline.produce import produce_generated
from driftline.settings import Settings
from driftline.wiring import model_registry
from stream.synthetic import DriftSchedule
from stream.topics import Topics
from tests.helpers import consume_all
from tests.integration.loop_support import model_steps, running_loop
from tests.integration.worker_support import register, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# A small, fast loop: short training windows, a big canary, few outcomes to decide on.
LOOP_SETTINGS: dict[str, Any] = {
    "retrain_recent_rows": 6000,
    "retrain_min_rows": 2000,
    "canary_fraction": 0.5,
    "rollout_min_outcomes": 300,
    "retrain_cooldown_seconds": 3600.0,
    "drift_window_seconds": 0.0,  # concept drift only: inputs do not move
}


@pytest.fixture
def loop_settings(own_settings: Settings) -> Iterator[Settings]:
    yield own_settings.model_copy(update=LOOP_SETTINGS)


def _produce(s: Settings, n: int, seed: int, schedule: DriftSchedule, start_ts: float) -> None:
    tally = produce_generated(
        s,
        n,
        0,
        seed=seed,
        entities=1000,
        schedule=schedule,
        label_delay=10,
        start_ts=start_ts,
        console=Console(quiet=True),
    )
    assert tally.failed == 0


def test_concept_flip_retrains_once_then_canary_is_promoted(loop_settings: Settings, tmp_path: Path) -> None:
    s = loop_settings
    topics = Topics(s.topic_prefix)
    register(s)  # production v1, trained before the flip
    registry = model_registry(s, publish=False)
    with running_loop(s, tmp_path / "retrainer.log"):
        # 4,000 events under the old concept, then 8,000 under the new one.
        _produce(s, 12_000, seed=21, schedule=DriftSchedule(concept_at=4_000), start_ts=1.7e9)
        wait_until(lambda: registry.deployment("fraud").canary is not None, timeout=240, every=1.0)
        canary = registry.deployment("fraud").canary
        assert canary is not None and canary.version == 2
        # More traffic under the new concept: the canary earns its outcomes.
        _produce(s, 6_000, seed=22, schedule=DriftSchedule(concept_at=0), start_ts=1.7e9 + 10_000)
        wait_until(lambda: _production(registry) == 2, timeout=240, every=1.0)
        # Every event gets its label: 18,000 served outcomes once the joiner has caught up.
        outcomes = [r.json() for r in consume_all(s, topics.outcomes, 18_000, 120)]

    steps = model_steps(s)
    kinds = Counter(e["kind"] for e in steps)
    assert kinds["retrain_started"] == 1, kinds  # one drift, one job (later triggers: cooldown)
    assert kinds["retrain_finished"] == 1, kinds
    decided = [e for e in steps if e["kind"] == "rollout_decided"]
    assert [d["detail"]["action"] for d in decided] == ["promote"], decided
    evidence = decided[0]["detail"]["evidence"]
    assert evidence["candidate_outcomes"] >= s.rollout_min_outcomes
    assert evidence["upper_bound"] < evidence["margin"]
    alerts = [r.json() for r in consume_all(s, topics.signals, 1, 10)]
    assert any(a["detector"] == "error_rate" and a["severity"] == "critical" for a in alerts), alerts
    incidents = [r.json() for r in consume_all(s, topics.alerts, 1, 10)]
    opened = [e for e in incidents if e["kind"] == "opened" and e["version"] == 1]
    assert len(opened) == 1, [(e["kind"], e["version"], e["summary"]) for e in incidents]  # one change

    served = [o for o in outcomes if o["served"]]
    assert len(served) == len({o["event_id"] for o in served}) == 18_000  # each event judged once
    flip_ts = 1.7e9 + 4_000 / 2  # the generator makes 2 events per second of event time

    def accuracy(version: int, after_flip: bool) -> float:
        hits = [
            o["correct"]
            for o in served
            if o["version"] == version
            and (datetime.fromisoformat(o["event_ts"]).timestamp() >= flip_ts) == after_flip
        ]
        assert len(hits) >= 300, (version, after_flip, len(hits))
        return sum(hits) / len(hits)

    old_before, old_after, new_after = accuracy(1, False), accuracy(1, True), accuracy(2, True)
    print(
        f"live accuracy: fraud:1 {old_before:.3f} before the flip, {old_after:.3f} after; "
        f"fraud:2 {new_after:.3f}"
    )
    assert old_after < old_before - 0.05, (old_before, old_after)  # the flip hurt the old model
    assert new_after >= old_before - 0.02, (old_before, new_after)  # the new one recovered


def _production(registry: Any) -> int | None:
    p = registry.deployment("fraud").production
    return p.version if p else None


def test_a_rolled_back_candidate_retries_its_incident(loop_settings: Settings, tmp_path: Path) -> None:
    """The incident's one job produced a canary that lost its trial: the incident is still open
    (the old model still serves), so the retrainer starts one more job for it after the cooldown."""
    s = loop_settings.model_copy(update={"retrain_cooldown_seconds": 5.0})
    register(s)
    registry = model_registry(s, publish=False)
    with running_loop(s, tmp_path / "retrainer.log"):
        _produce(s, 12_000, seed=31, schedule=DriftSchedule(concept_at=4_000), start_ts=1.7e9)
        wait_until(lambda: registry.deployment("fraud").canary is not None, timeout=240, every=1.0)
        # The concept flips back: the canary, trained on the flipped one, is worse than production.
        _produce(s, 6_000, seed=32, schedule=DriftSchedule(), start_ts=1.7e9 + 10_000)
        wait_until(lambda: Counter(e["kind"] for e in model_steps(s))["retrain_started"] >= 2, 240, 1.0)

    steps = model_steps(s)
    decided = [e for e in steps if e["kind"] == "rollout_decided"]
    assert decided and decided[0]["detail"]["action"] == "rollback", decided
    assert decided[0]["detail"]["version"] == 2, decided
    started = [e["detail"]["trigger"] for e in steps if e["kind"] == "retrain_started"]
    first, retry = started[0], started[1]
    assert first["incident_id"] is not None and retry["incident_id"] == first["incident_id"], started
    assert (first["attempt"], retry["attempt"]) == (1, 2), started
    assert _production(registry) == 1  # the rollback kept the old model serving
