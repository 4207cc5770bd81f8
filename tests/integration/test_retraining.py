"""Retraining against the real Redis registry, on synthetic data with and without a concept flip."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis

from driftline.settings import Settings
from driftline.training_data import LabeledArrays, synthetic_training_set
from inference.registry import ModelRegistry
from inference.retraining import RetrainConfig, RetrainResult, retrain
from inference.training import evaluate, register_trained, time_split, train_model
from stream.synthetic import DriftSchedule

pytestmark = pytest.mark.integration

NAME = "fraud"


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    url = Settings().redis_url
    r = redis.Redis.from_url(url)
    try:
        r.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the retraining tests need Redis at {url} (`driftline stack up`): {exc}")
    yield r
    r.close()


@pytest.fixture
def registry(client: redis.Redis, new_prefix: Callable[[str], str]) -> ModelRegistry:
    return ModelRegistry(client, new_prefix("retraining"))


def _rows(data: LabeledArrays, idx: np.ndarray | slice) -> LabeledArrays:
    return LabeledArrays(
        {k: v[idx] for k, v in data.numeric.items()},
        {k: v[idx] for k, v in data.categorical.items()},
        data.labels[idx],
        data.ts[idx],
    )


def _register_production(registry: ModelRegistry, data: LabeledArrays) -> int:
    trained = train_model(data.numeric, data.categorical, data.labels, data.ts, source="production")
    return register_trained(registry, NAME, trained, "production").version


def _retrain(registry: ModelRegistry, data: LabeledArrays, config: RetrainConfig) -> RetrainResult:
    return retrain(
        registry, NAME, data.numeric, data.categorical, data.labels, data.ts, config, source="retrain test"
    )


def test_after_a_concept_flip_the_candidate_beats_production_and_is_registered(
    registry: ModelRegistry,
) -> None:
    data = synthetic_training_set(16_000, seed=3, schedule=DriftSchedule(concept_at=8000))
    production = _register_production(registry, _rows(data, slice(0, 8000)))
    config = RetrainConfig(recent_rows=8000, min_rows=2000)

    result = _retrain(registry, data, config)

    assert result.registered, result.reason
    assert (result.production_version, result.candidate_version) == (production, production + 1)
    assert (result.rows, result.holdout_rows) == (8000, 1600)
    # The newest 8,000 rows by event time are all after the flip.
    assert result.data_start is not None and result.data_end is not None
    assert result.data_start.timestamp() == pytest.approx(float(np.sort(data.ts)[8000]))
    assert result.data_end.timestamp() == pytest.approx(float(data.ts.max()))
    assert result.production_metrics is not None
    assert result.candidate_metrics["accuracy"] > result.production_metrics["accuracy"] + 0.05
    assert result.candidate_metrics["log_loss"] < result.production_metrics["log_loss"]
    assert "registered fraud:2 as candidate" in result.reason and "1,600 holdout rows" in result.reason

    # Production's metrics are its scores on exactly the newest 1,600 rows, encoded its own way.
    _, session = registry.load(NAME, production)
    newest = _rows(data, np.argsort(data.ts, kind="stable")[-1600:])
    assert evaluate(session, newest.numeric, newest.categorical, newest.labels) == result.production_metrics

    candidate = registry.get(NAME, result.candidate_version)
    assert candidate.stage == "candidate"
    assert candidate.training is not None and candidate.training.metrics == result.candidate_metrics
    assert candidate.training.source == "retrain test"
    deployment = registry.deployment(NAME)
    assert deployment.production is not None and deployment.production.version == production
    assert deployment.canary is None and deployment.shadow is None


def test_a_candidate_trained_on_shuffled_labels_is_not_registered(registry: ModelRegistry) -> None:
    production = _register_production(registry, synthetic_training_set(8000, seed=4))
    data = synthetic_training_set(8000, seed=5)
    # Shuffle the labels the candidate learns from; the holdout (newest 20%) keeps the true ones,
    # so both models are judged on real outcomes and the candidate has learnt nothing.
    train_idx, _ = time_split(data.labels.size, 0.2, data.ts)
    labels = data.labels.copy()
    labels[train_idx] = np.random.default_rng(0).permutation(labels[train_idx])
    data = LabeledArrays(data.numeric, data.categorical, labels, data.ts)

    result = _retrain(registry, data, RetrainConfig(recent_rows=8000))

    assert not result.registered and result.candidate_version is None
    assert result.production_version == production and result.production_metrics is not None
    assert result.candidate_metrics["log_loss"] > result.production_metrics["log_loss"]
    assert result.reason.startswith("not registered: candidate log_loss")
    assert "worse by" in result.reason and f"production fraud:{production}" in result.reason
    assert [v.version for v in registry.versions(NAME)] == [production]

    # A margin wider than the gap lets the same candidate through.
    gap = result.candidate_metrics["log_loss"] - result.production_metrics["log_loss"]
    lenient = _retrain(registry, data, RetrainConfig(recent_rows=8000, margin=gap + 0.01))
    assert lenient.registered and lenient.candidate_version == production + 1
    assert "within the margin" in lenient.reason


def test_too_few_rows_or_one_class_are_not_trained(registry: ModelRegistry) -> None:
    data = synthetic_training_set(6000, seed=6)
    few = _retrain(registry, data, RetrainConfig(recent_rows=600))
    assert not few.registered and (few.rows, few.candidate_metrics) == (600, {})
    assert "600 labeled rows" in few.reason and "min_rows=1,000" in few.reason

    one_class = LabeledArrays(data.numeric, data.categorical, np.zeros_like(data.labels), data.ts)
    single = _retrain(registry, one_class, RetrainConfig())
    assert not single.registered and "single class" in single.reason
    assert registry.versions(NAME) == []


def test_without_production_the_candidate_is_registered(registry: ModelRegistry) -> None:
    data = synthetic_training_set(6000, seed=7)
    result = _retrain(registry, data, RetrainConfig())

    assert result.registered and result.candidate_version == 1
    assert result.production_version is None and result.production_metrics is None
    assert "no production version" in result.reason
    assert result.candidate_metrics["auc"] > 0.85
    assert registry.get(NAME, 1).stage == "candidate"
    assert registry.deployment(NAME).production is None


def test_production_with_features_the_data_lacks_is_not_comparable(registry: ModelRegistry) -> None:
    data = synthetic_training_set(6000, seed=8)
    extra = np.random.default_rng(0).normal(size=len(data))
    production = _register_production(
        registry,
        LabeledArrays({**data.numeric, "extra": extra}, data.categorical, data.labels, data.ts),
    )
    result = _retrain(registry, data, RetrainConfig())

    assert result.registered and result.candidate_version == production + 1
    assert result.production_version == production and result.production_metrics is None
    assert "not comparable" in result.reason and "extra" in result.reason
