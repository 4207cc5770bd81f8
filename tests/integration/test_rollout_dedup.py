"""The retrainer's rollout evidence counts each outcome id once: outcomes repeated (a redone
batch, a label sent twice) do not bring a canary decision forward."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from driftline.settings import Settings
from driftline.wiring import model_registry
from stream.outcomes import Outcome
from stream.topics import Topics
from tests.integration.loop_support import model_steps, spawn_retrainer, stop_process
from tests.integration.test_retrainer import _caught_up
from tests.integration.worker_support import register, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _outcome(i: int, version: int) -> bytes:
    arm = "production" if version == 1 else "canary"
    now = datetime.now(UTC)
    return Outcome(
        id=f"e{i}:fraud:{version}:{arm}", event_id=f"e{i}", entity_id=f"card-{i}", model="fraud",
        version=version, arm=arm, served=True, score=0.1, predicted=0, label=0, correct=True,
        event_ts=now, label_ts=now,
    ).model_dump_json().encode()  # fmt: skip


def _send(s: Settings, values: list[bytes]) -> None:
    p = Producer(s.kafka_client_config())
    for v in values:
        p.produce(Topics(s.topic_prefix).outcomes, v, b"fraud")
    assert p.flush(15) == 0


def test_repeated_outcomes_count_once_in_the_canary_evidence(own_settings: Settings, tmp_path: Path) -> None:
    s = own_settings.model_copy(update={"rollout_min_outcomes": 300, "drift_window_seconds": 0.0})
    register(s)
    registry = model_registry(s)
    candidate = register(s, stage="candidate", seed=1)
    registry.canary("fraud", candidate.version, 0.5)
    retrainer = spawn_retrainer(s, tmp_path / "retrainer.log")
    try:
        # 299 distinct canary outcomes, each three times: 897 messages, not yet enough evidence.
        production = [_outcome(i, 1) for i in range(400)]
        canary = [_outcome(i, candidate.version) for i in range(299)]
        _send(s, production + canary * 3)
        wait_until(lambda: _caught_up(s, Topics(s.topic_prefix).outcomes), 120, 1.0)
        assert registry.deployment("fraud").canary is not None, "decided on repeated outcomes"
        assert not [e for e in model_steps(s, 0, 2) if e["kind"] == "rollout_decided"]

        _send(s, [_outcome(299, candidate.version)])  # the 300th distinct one
        wait_until(lambda: registry.deployment("fraud").canary is None, 120, 1.0)
    finally:
        stop_process(retrainer)
    decided = [e for e in model_steps(s) if e["kind"] == "rollout_decided"]
    assert len(decided) == 1, decided
    assert decided[0]["detail"]["evidence"]["candidate_outcomes"] == 300
