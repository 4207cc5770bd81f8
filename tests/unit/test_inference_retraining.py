"""Retraining without Redis: row selection, the shared time split, config and input validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis
from pydantic import ValidationError

from inference.registry import ModelRegistry
from inference.retraining import RetrainConfig, retrain, select_rows
from inference.training import binary_metrics, time_split, train_model


def _data(n: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    color = rng.choice(["red", "blue"], size=n).astype(object)
    y = ((x + (color == "red") + rng.normal(scale=0.5, size=n)) > 0.5).astype(np.int64)
    ts = 1.7e9 + rng.permutation(n).astype(np.float64)  # rows out of time order
    return {"x": x}, {"color": color}, y, ts


@pytest.fixture
def offline_registry() -> ModelRegistry:
    # redis-py connects lazily: any call reaching Redis fails with ConnectionError, not ValueError.
    return ModelRegistry(redis.Redis(host="127.0.0.1", port=1), "test-retraining-offline")


def test_time_split_is_the_holdout_train_model_scores() -> None:
    numeric, categorical, y, ts = _data(1001, seed=1)
    train_idx, hold_idx = time_split(y.size, 0.2, ts)
    assert hold_idx.size == 201 and train_idx.size == 800
    assert ts[hold_idx].min() > ts[train_idx].max()
    assert np.array_equal(np.sort(np.concatenate([train_idx, hold_idx])), np.arange(y.size))
    trained = train_model(numeric, categorical, y, ts)
    scores = trained.session().score_events({**numeric, **categorical}, y.size)[hold_idx]
    assert trained.training.holdout_rows == hold_idx.size
    assert binary_metrics(y[hold_idx], scores) == trained.training.metrics


def test_time_split_without_ts_holds_out_the_last_rows() -> None:
    train_idx, hold_idx = time_split(10, 0.25)
    assert train_idx.tolist() == list(range(7)) and hold_idx.tolist() == [7, 8, 9]
    with pytest.raises(ValueError, match="holdout_fraction"):
        time_split(10, 1.0)
    with pytest.raises(ValueError, match="ts has 3 values"):
        time_split(10, 0.2, np.arange(3.0))


def test_select_rows_takes_the_newest_by_event_time() -> None:
    ts = 1.7e9 + np.random.default_rng(0).permutation(1000).astype(np.float64)
    sel = select_rows(ts, RetrainConfig(recent_rows=100))
    assert np.all(np.diff(sel) > 0)
    assert sorted(ts[sel].tolist()) == (1.7e9 + np.arange(900, 1000)).tolist()
    assert select_rows(ts, RetrainConfig(recent_rows=5000)).tolist() == list(range(1000))


def test_select_rows_adds_a_uniform_sample_of_older_rows() -> None:
    ts = 1.7e9 + np.random.default_rng(0).permutation(10_000).astype(np.float64)
    config = RetrainConfig(recent_rows=1000, older_share=0.5, seed=3)
    sel = select_rows(ts, config)
    age = ts[sel] - 1.7e9
    older = age[age < 9000]
    assert sel.size == 1500 and (age >= 9000).sum() == 1000 and older.size == 500
    assert older.min() < 1000 and 3500 < older.mean() < 5500  # spread over all older rows
    assert np.array_equal(sel, select_rows(ts, config))
    assert not np.array_equal(sel, select_rows(ts, config.model_copy(update={"seed": 4})))
    # Asking for more older rows than exist takes them all.
    assert select_rows(ts, RetrainConfig(recent_rows=1000, older_share=20.0)).size == 10_000


def test_config_is_frozen_strict_and_checked() -> None:
    config = RetrainConfig()
    assert (config.recent_rows, config.min_rows, config.metric) == (20_000, 1000, "log_loss")
    with pytest.raises(ValidationError):
        RetrainConfig(metric="f1")
    with pytest.raises(ValidationError):
        RetrainConfig(holdout_fraction=1.0)
    with pytest.raises(ValidationError):
        RetrainConfig(margin=-0.1)
    with pytest.raises(ValidationError):
        RetrainConfig(recent=5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        config.margin = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(labels=d["labels"][:-1]), "labels have 1999"),
        (lambda d: d.update(ts=d["ts"][:-1]), "ts has 1999 values"),
        (lambda d: d.update(labels=d["labels"] * 2), "labels must be 0/1"),
        (lambda d: d.update(categorical={"x": d["categorical"]["color"]}), "both numeric and categorical"),
        (lambda d: d.update(numeric={}, categorical={}), "no features"),
        (lambda d: d.update(name="bad name"), "invalid model name"),
        (lambda d: d["ts"].__setitem__(5, np.nan), "non-finite"),
    ],
)
def test_inconsistent_inputs_raise_before_touching_redis(
    offline_registry: ModelRegistry, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    numeric, categorical, y, ts = _data(2000, seed=2)
    kwargs: dict[str, Any] = {
        "name": "fraud",
        "numeric": numeric,
        "categorical": categorical,
        "labels": y,
        "ts": ts,
    }
    change(kwargs)
    with pytest.raises(ValueError, match=message):
        retrain(offline_registry, **kwargs)
