"""The worker's CUSUMs: per partition, checkpointed to Redis, restored after a restart (real Redis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from detectors.incidents import split_outputs
from inference.metadata import Distribution, FeatureSpec, ModelVersion
from stream.drift import DriftConfig, DriftStage

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def _meta() -> ModelVersion:
    rng = np.random.default_rng(0)
    return ModelVersion(
        name="fraud",
        version=1,
        sha256="0" * 64,
        features=[FeatureSpec(name="x", kind="numeric")],
        input_name="input",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        stage="production",
        reference={"x": Distribution(kind="numeric", sample=rng.normal(size=5000).tolist(), count=5000)},
        score_reference=Distribution(kind="numeric", sample=rng.random(5000).tolist(), count=5000),
    )


def _stage(r: redis.Redis, ns: str) -> DriftStage:
    cfg = DriftConfig(window_seconds=3600, allowed_lateness=0, idle_timeout_seconds=None)
    stage = DriftStage(r, ns, CollectorRegistry(), cfg, monitored={"x"}, worker_id="w")
    stage.set_partitions([0, 1])
    return stage


def _batches() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    out = []
    offsets = [0, 0]
    for i in range(30):
        n = 1000
        x = rng.normal(size=n) + (0.6 if i >= 20 else 0.0)
        parts = rng.integers(0, 2, n)
        offs = np.empty(n, dtype=np.int64)
        for p in (0, 1):
            m = parts == p
            offs[m] = offsets[p] + np.arange(int(m.sum()))
            offsets[p] += int(m.sum())
        ts = T0 + i + np.arange(n) / n
        out.append((x, rng.random(n), ts, parts, offs))
    return out


def _cusum_states(r: redis.Redis, ns: str) -> dict[int, object]:
    return {p: json.loads(r.get(f"{{{ns}:drift:fraud:1}}:~adwin:{p}") or b"{}").get("cusum") for p in (0, 1)}


def test_cusum_checkpoint_survives_a_restart_and_skips_replays(redis_ns: tuple[redis.Redis, str]) -> None:
    r, ns = redis_ns
    meta, data = _meta(), _batches()

    def feed(stage: DriftStage, part: range) -> list[tuple[str, str, str]]:
        got: list[tuple[str, str, str]] = []
        for i in part:
            x, scores, ts, parts, offs = data[i]
            alerts, _ = split_outputs(
                stage.observe(meta, {"x": x.tolist()}, np.arange(x.size), scores, ts, parts, offs)
            )
            stage.checkpoint()
            got += [(a.feature, a.detector, a.severity) for a in alerts]
        return got

    whole = feed(_stage(r, f"{ns}-a"), range(30))
    first = feed(_stage(r, f"{ns}-b"), range(15))
    restarted = _stage(r, f"{ns}-b")  # a new worker takes both partitions over from the checkpoints
    rest = feed(restarted, range(12, 30))  # 12..14 replayed: already fed, skipped
    assert ("x", "cusum", "critical") in whole
    assert first + rest == whole
    assert _cusum_states(r, f"{ns}-a") == _cusum_states(r, f"{ns}-b")
    state = _cusum_states(r, f"{ns}-a")[0]
    assert isinstance(state, dict) and set(state) == {"x", "__score__"}
