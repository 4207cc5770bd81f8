"""Training from arrays, ONNX export, and verified ONNX sessions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from inference.encoding import encode_features
from inference.metadata import FeatureSpec, ModelVersion
from inference.session import ModelIntegrityError, ModelSession
from inference.training import MAX_CATEGORIES, OTHER_CATEGORY, TrainedModel, evaluate, train_model

COLORS = np.array(["red", "green", "blue", "black"])


@dataclass
class Data:
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    labels: np.ndarray
    ts: np.ndarray

    @property
    def columns(self) -> dict[str, Any]:
        return {**self.numeric, **self.categorical}


def make_data(n: int, seed: int) -> Data:
    """A known linear rule over two numeric features and one categorical, with missing values."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(loc=5.0, scale=2.0, size=n)
    color = rng.choice(COLORS, size=n).astype(object)
    logit = 2.0 * x1 - 1.0 * (x2 - 5.0) + 2.5 * (color == "red") - 1.0
    labels = (logit + rng.logistic(scale=0.3, size=n) > 0).astype(np.int64)
    x2[rng.random(n) < 0.05] = np.nan
    color[rng.random(n) < 0.05] = None
    # Rows arrive out of time order: the holdout must be chosen by ts.
    ts = np.datetime64("2026-03-01T00:00:00") + rng.permutation(n).astype("timedelta64[s]")
    return Data({"x1": x1, "x2": x2}, {"color": color}, labels, ts)


DATA = make_data(3000, seed=1)


@pytest.fixture(scope="module", params=["logreg", "gbt"])
def trained(request: pytest.FixtureRequest) -> TrainedModel:
    return train_model(
        DATA.numeric, DATA.categorical, DATA.labels, ts=DATA.ts, estimator=request.param, source="unit-test"
    )


def _meta(model: TrainedModel, **overrides: Any) -> ModelVersion:
    fields: dict[str, Any] = {
        "name": "fraud",
        "version": 7,
        "sha256": model.sha256,
        "features": model.features,
        "input_name": "input",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "stage": "candidate",
    }
    return ModelVersion(**{**fields, **overrides})


def test_onnx_model_separates_the_holdout(trained: TrainedModel) -> None:
    m = trained.training.metrics
    assert m["auc"] > 0.9
    assert m["accuracy"] > 0.8
    assert 0.0 < m["log_loss"] < 0.5
    assert m["positive_rate"] == pytest.approx(m["label_rate"], abs=0.1)


def test_fresh_data_from_the_same_rule_scores_well(trained: TrainedModel) -> None:
    fresh = make_data(2000, seed=2)
    metrics = evaluate(trained.session(), fresh.numeric, fresh.categorical, fresh.labels)
    assert metrics["auc"] > 0.9
    # Evaluating the training holdout through `evaluate` reproduces the stored metrics.
    order = np.argsort(DATA.ts, kind="stable")
    hold = np.sort(order[-trained.training.holdout_rows :])
    again = evaluate(
        trained.session(),
        {k: v[hold] for k, v in DATA.numeric.items()},
        {k: v[hold] for k, v in DATA.categorical.items()},
        DATA.labels[hold],
    )
    assert again == pytest.approx(trained.training.metrics)


def test_onnx_scores_equal_sklearn(trained: TrainedModel) -> None:
    X = encode_features(trained.features, DATA.columns, len(DATA.labels))
    onnx_scores = trained.session().predict(X)
    sklearn_scores = trained.sklearn_model.predict_proba(X)[:, 1]
    assert onnx_scores.dtype == np.float64
    np.testing.assert_allclose(onnx_scores, sklearn_scores, atol=1e-4)
    assert onnx_scores.min() >= 0.0 and onnx_scores.max() <= 1.0


def test_training_info(trained: TrainedModel) -> None:
    info = trained.training
    assert info.estimator in ("logreg", "gbt")
    assert (info.rows, info.holdout_rows) == (2400, 600)
    assert info.data_start == datetime(2026, 3, 1, tzinfo=UTC)
    assert info.data_end == datetime(2026, 3, 1, 0, 49, 59, tzinfo=UTC)  # 2999 s later
    assert info.source == "unit-test"
    assert trained.sha256 == hashlib.sha256(trained.onnx_bytes).hexdigest()


def test_feature_specs_come_from_the_training_rows_only(trained: TrainedModel) -> None:
    train_rows = np.argsort(DATA.ts, kind="stable")[:2400]
    by_name = {f.name: f for f in trained.features}
    assert [f.name for f in trained.features] == ["x1", "x2", "color"]
    assert by_name["x2"].kind == "numeric"
    assert by_name["x2"].fill_value == pytest.approx(float(np.nanmedian(DATA.numeric["x2"][train_rows])))
    assert by_name["x1"].fill_value == pytest.approx(float(np.median(DATA.numeric["x1"][train_rows])))
    assert by_name["color"].categories == sorted(COLORS.tolist())


def test_reference_distributions(trained: TrainedModel) -> None:
    train_rows = np.argsort(DATA.ts, kind="stable")[:2400]
    x2 = trained.reference["x2"]
    assert x2.kind == "numeric" and x2.count == 2400
    assert x2.missing_rate == pytest.approx(np.isnan(DATA.numeric["x2"][train_rows]).mean())
    assert len(x2.sample) == 2400 - round(x2.missing_rate * 2400)
    assert sorted(x2.sample) == pytest.approx(
        sorted(np.asarray(DATA.numeric["x2"][train_rows])[~np.isnan(DATA.numeric["x2"][train_rows])])
    )
    color = trained.reference["color"]
    colors = DATA.categorical["color"][train_rows]
    present = colors[colors != None]  # noqa: E711 - elementwise comparison on an object array
    assert color.kind == "categorical" and color.sample == []
    assert color.missing_rate == pytest.approx(1 - len(present) / 2400)
    assert color.frequencies["red"] == pytest.approx(np.mean(present == "red"))
    assert sum(color.frequencies.values()) == pytest.approx(1.0)
    # The score reference is the ONNX model's holdout scores.
    hold = np.sort(np.argsort(DATA.ts, kind="stable")[2400:])
    scores = trained.session().score_events({k: v[hold] for k, v in DATA.columns.items()}, 600)
    assert trained.score_reference.count == 600
    assert trained.score_reference.sample == pytest.approx(scores.tolist())


def test_reference_sample_is_capped_and_categories_too() -> None:
    rng = np.random.default_rng(4)
    n = 8000
    x = rng.normal(size=n)
    # 60 categories with strictly decreasing frequencies: cat00 most frequent.
    weights = np.arange(60, 0, -1, dtype=float)
    cat = rng.choice([f"cat{i:02d}" for i in range(60)], size=n, p=weights / weights.sum())
    y = (x > 0).astype(int)
    m = train_model({"x": x}, {"cat": cat}, y)
    assert len(m.reference["x"].sample) == 5000 and m.reference["x"].count == 6400
    assert len(set(m.reference["x"].sample)) == 5000
    spec = m.features[1]
    assert len(spec.categories) == MAX_CATEGORIES and spec.categories == sorted(spec.categories)
    train = cat[:6400]
    uniques, counts = np.unique(train, return_counts=True)
    top = set(uniques[np.lexsort((uniques, -counts))[:MAX_CATEGORIES]].tolist())
    assert set(spec.categories) == top
    assert OTHER_CATEGORY in m.reference["cat"].frequencies
    assert sum(m.reference["cat"].frequencies.values()) == pytest.approx(1.0)


def test_holdout_is_the_latest_rows_by_time() -> None:
    # The rule flips for the latest 20% by ts; rows are stored in shuffled order.
    rng = np.random.default_rng(5)
    n = 2000
    x = rng.normal(size=n)
    when = rng.permutation(n).astype(np.float64) + 1.8e9  # epoch seconds
    late = when >= np.quantile(when, 0.8)
    y = np.where(late, x < 0, x > 0).astype(int)
    by_time = train_model({"x": x}, {}, y, ts=when)
    assert by_time.training.metrics["auc"] < 0.1  # the holdout is exactly the flipped rows
    assert by_time.training.data_start == datetime.fromtimestamp(1.8e9, UTC)
    # Without ts, the holdout is the last rows in the given order: mostly unflipped ones.
    by_order = train_model({"x": x}, {}, y)
    assert by_order.training.metrics["auc"] > 0.5
    assert by_order.training.data_start is None


def test_bad_training_input_is_refused() -> None:
    x = np.arange(10.0)
    y = np.array([0, 1] * 5)
    with pytest.raises(ValueError, match="labels must be 0/1"):
        train_model({"x": x}, {}, y * 2)
    with pytest.raises(ValueError, match="both classes"):
        train_model({"x": x}, {}, np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match="'x' has 9 values"):
        train_model({"x": x[:9]}, {}, y)
    with pytest.raises(ValueError, match="both numeric and categorical"):
        train_model({"x": x}, {"x": x.astype(str)}, y)
    with pytest.raises(ValueError, match="holdout_fraction"):
        train_model({"x": x}, {}, y, holdout_fraction=1.0)
    with pytest.raises(ValueError, match="unknown estimator"):
        train_model({"x": x}, {}, y, estimator="forest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 columns"):
        train_model({}, {"c": np.array([None] * 10, dtype=object)}, y)


# -- sessions ----------------------------------------------------------------------------------------


def test_load_verifies_the_hash(trained: TrainedModel) -> None:
    session = ModelSession.load(_meta(trained), trained.onnx_bytes)
    assert session.ref == "fraud:7" and session.meta is not None
    tampered = bytearray(trained.onnx_bytes)
    tampered[-1] ^= 0xFF
    with pytest.raises(ModelIntegrityError) as info:
        ModelSession.load(_meta(trained), bytes(tampered))
    message = str(info.value)
    assert "fraud:7" in message and "sha256 mismatch" in message
    assert trained.sha256 in message and hashlib.sha256(tampered).hexdigest() in message


def test_wrong_input_width_is_refused(trained: TrainedModel) -> None:
    wider = [*trained.features, FeatureSpec(name="extra", kind="numeric")]
    with pytest.raises(
        ModelIntegrityError, match=r"fraud:7: input 'input' has width 6, but the 4 features encode to 7"
    ):
        ModelSession.load(_meta(trained, features=wider), trained.onnx_bytes)
    with pytest.raises(ModelIntegrityError, match="width"):
        ModelSession.open(trained.onnx_bytes, trained.features[:1])


def test_other_metadata_mismatches_are_refused(trained: TrainedModel) -> None:
    with pytest.raises(ModelIntegrityError, match="metadata says 'features'"):
        ModelSession.load(_meta(trained, input_name="features"), trained.onnx_bytes)
    junk = b"definitely not an onnx model"
    with pytest.raises(ModelIntegrityError, match="fraud:7: not a loadable ONNX model"):
        ModelSession.load(_meta(trained, sha256=hashlib.sha256(junk).hexdigest()), junk)


def test_predict_and_score_events(trained: TrainedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    session = ModelSession.load(_meta(trained), trained.onnx_bytes)
    n = len(DATA.labels)
    calls: list[int] = []
    inner = session._session
    real_run = inner.run

    def counting_run(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(inner, "run", counting_run)
    scores = session.score_events(DATA.columns, n)
    assert len(calls) == 1  # one onnxruntime call per batch
    np.testing.assert_array_equal(scores, session.predict(encode_features(trained.features, DATA.columns, n)))
    assert scores.shape == (n,) and scores.dtype == np.float64
    assert session.predict(np.zeros((0, 6), dtype=np.float32)).shape == (0,)
    with pytest.raises(ValueError, match=r"expected an \[n, 6\] matrix, got shape \(3, 5\)"):
        session.predict(np.zeros((3, 5), dtype=np.float32))
    # float64 input is accepted (cast to the model's float32).
    first10 = {k: v[:10] for k, v in DATA.columns.items()}
    X64 = encode_features(trained.features, first10, 10).astype(np.float64)
    np.testing.assert_allclose(session.predict(X64), scores[:10])
