"""Events production's input contract dead-lettered reach the drift windows as missing values
of their offending input only, and a replayed batch counts them once (real Redis)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from detectors.incidents import split_outputs
from detectors.signals import SCORE_FEATURE, WindowStat
from inference.metadata import Distribution, FeatureSpec, ModelVersion
from stream.drift import DriftConfig, DriftStage, Unscored, history_key

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
N = 1000


def _meta() -> ModelVersion:
    rng = np.random.default_rng(0)

    def numeric() -> Distribution:
        return Distribution(kind="numeric", sample=rng.normal(size=5000).tolist(), count=5000)

    return ModelVersion(
        name="m",
        version=1,
        sha256="0" * 64,
        features=[FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="y", kind="numeric")],
        input_name="input",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        stage="production",
        reference={"x": numeric(), "y": numeric()},
        score_reference=Distribution(kind="numeric", sample=rng.random(5000).tolist(), count=5000),
    )


def test_unscored_events_count_as_missing_for_their_input_only_and_once(
    redis_ns: tuple[redis.Redis, str],
) -> None:
    r, ns = redis_ns
    cfg = DriftConfig(window_seconds=3600, allowed_lateness=0, idle_timeout_seconds=None)
    stage = DriftStage(r, ns, CollectorRegistry(), cfg, worker_id="w")
    stage.set_partitions([0])
    meta, rng = _meta(), np.random.default_rng(1)
    offsets = np.arange(N, dtype=np.int64)
    refused = offsets % 10 < 3  # 30% of the events: x of the wrong type, dead-lettered
    scored, unscored_at = np.flatnonzero(~refused), np.flatnonzero(refused)
    ts = T0 + offsets / N
    columns = {"x": rng.normal(size=scored.size).tolist(), "y": rng.normal(size=scored.size).tolist()}
    unscored = Unscored(
        ts[unscored_at], np.zeros(unscored_at.size, dtype=np.int64), offsets[unscored_at],
        [frozenset({"x"})] * unscored_at.size,
    )  # fmt: skip
    parts = np.zeros(scored.size, dtype=np.int64)
    rows, scores = np.arange(scored.size), rng.random(scored.size)
    for _ in range(2):  # the second time: the batch consumed again after a crash, all replays
        stage.observe(meta, columns, rows, scores, ts[scored], parts, offsets[scored], unscored)
        stage.published()
    # A batch of only dead-lettered events (nothing scored) still counts, and closes the window.
    late = Unscored(np.array([T0 + 3601.0]), np.zeros(1, dtype=np.int64), np.array([N]), [frozenset({"x"})])
    outputs = stage.observe(meta, {}, np.empty(0, dtype=np.int64), np.empty(0), np.empty(0), parts[:0],
                           parts[:0], late)  # fmt: skip
    stats = {(w.detector, w.feature): w for w in map(WindowStat.model_validate_json, r.lrange(
        history_key(ns, "m", 1), 0, -1))}  # fmt: skip
    assert stats[("missing_rate", "x")].n_window == N  # every event, the unscored ones as missing
    assert stats[("missing_rate", "x")].statistic == pytest.approx(0.3)
    assert stats[("missing_rate", "y")].n_window == scored.size  # y: only the scored events
    assert stats[("missing_rate", "y")].statistic == 0.0
    assert stats[("psi", SCORE_FEATURE)].n_window == scored.size  # no score for the unscored
    alerts, incidents = split_outputs(outputs)
    assert [(a.feature, a.detector, a.severity) for a in alerts] == [("x", "missing_rate", "critical")]
    assert [(e.kind, [f.feature for f in e.incident.features]) for e in incidents] == [("opened", ["x"])]
