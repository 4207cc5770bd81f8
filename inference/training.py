"""Train a binary classifier from arrays and export it to ONNX (no Kafka, no files, no pickle).

The rows are split by time (the last `holdout_fraction` by ``ts``, or by order without ``ts``);
features are encoded with `encode_features`, exactly as the worker encodes them; the fitted
scikit-learn model is converted with skl2onnx, and every holdout metric is computed from the
*ONNX* model's scores, so a broken export cannot hide behind good sklearn numbers.

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=2000)
>>> color = rng.choice(["red", "blue"], size=2000)
>>> y = ((x + (color == "red")) > 0.5).astype(int)
>>> m = train_model({"x": x}, {"color": color}, y)
>>> [f.name for f in m.features], m.features[1].categories, m.training.metrics["auc"] > 0.99
(['x', 'color'], ['blue', 'red'], True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from typing import Any, Literal

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from feature_store.warmup import Warmup
from inference.encoding import Column, encode_features, numeric_values
from inference.metadata import (
    MAX_REFERENCE_SAMPLE,
    Distribution,
    FeatureSpec,
    ModelVersion,
    TrainingInfo,
    VersionInputs,
)
from inference.performance import ScoreCalibration
from inference.registry import ModelRegistry
from inference.session import ModelSession, sha256_hex

Estimator = Literal["logreg", "gbt"]

INPUT_NAME = "input"
MAX_CATEGORIES = 50
MIN_WARM_ROWS = 200  # fewer warm training rows: an aggregate's reference stays unmarked (unmonitored)
OTHER_CATEGORY = "__other__"
# Opsets every onnxruntime >= 1.17 loads; skl2onnx uses lower ones when they suffice.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}

_STRING_TYPES: dict[type, bool] = {str: True, np.str_: True}


@dataclass(frozen=True)
class TrainedModel:
    """An exported model with everything the registry stores next to it."""

    onnx_bytes: bytes = field(repr=False)
    features: list[FeatureSpec]
    training: TrainingInfo
    reference: dict[str, Distribution] = field(repr=False)
    score_reference: Distribution = field(repr=False)
    # The fitted scikit-learn object, for inspection in this process only (never persisted).
    sklearn_model: Any = field(default=None, repr=False, compare=False)

    @property
    def sha256(self) -> str:
        return sha256_hex(self.onnx_bytes)

    def session(self) -> ModelSession:
        """An onnxruntime session over `onnx_bytes`."""
        return ModelSession.open(self.onnx_bytes, self.features, ref="trained")


def _strings(col: Column) -> tuple[np.ndarray, np.ndarray]:
    """(mask of string cells, the string cells as a str array)."""
    cells = np.fromiter(col, dtype=object, count=len(col))
    mask = np.fromiter(map(_STRING_TYPES.get, map(type, cells), repeat(False)), dtype=bool, count=len(cells))
    return mask, cells[mask].astype(str)


def _top_categories(values: np.ndarray, cap: int) -> tuple[list[str], dict[str, float]]:
    """(up to `cap` most frequent categories, sorted; their shares plus OTHER_CATEGORY's)."""
    if values.size == 0:
        return [], {}
    uniques, counts = np.unique(values, return_counts=True)
    top = np.lexsort((uniques, -counts))[:cap]  # most frequent first, ties by name
    shares = counts / values.size
    freqs = {str(uniques[i]): float(shares[i]) for i in top}
    rest = 1.0 - float(shares[top].sum())
    if len(uniques) > cap:
        freqs[OTHER_CATEGORY] = max(rest, 0.0)
    return sorted(str(uniques[i]) for i in top), freqs


def _sample(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    if values.size > MAX_REFERENCE_SAMPLE:
        values = rng.choice(values, size=MAX_REFERENCE_SAMPLE, replace=False)
    return [float(v) for v in values]


def _epoch_seconds(ts: np.ndarray) -> np.ndarray:
    if ts.dtype.kind == "M":
        if np.isnat(ts).any():
            raise ValueError("ts contains NaT")
        return ts.astype("datetime64[us]").astype(np.int64) / 1e6
    if ts.dtype.kind in "iuf":
        secs = ts.astype(np.float64)
    else:  # datetime objects; naive ones are UTC
        secs = np.array(
            [(t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() for t in ts.tolist()], dtype=np.float64
        )
    if not np.isfinite(secs).all():
        raise ValueError("ts contains missing or non-finite values")
    return secs


def _labels(labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-d, got shape {y.shape}")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    return y.astype(np.int64)


def time_split(
    n: int, holdout_fraction: float, ts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) row indices, each ascending: the holdout is the newest
    ``ceil(n * holdout_fraction)`` rows by `ts` (stable on ties), or the last rows without `ts`.

    Shared with retraining, which must score production on exactly the rows `train_model` held out.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    secs = None if ts is None else _epoch_seconds(np.asarray(ts))
    if secs is not None and secs.size != n:
        raise ValueError(f"ts has {secs.size} values, labels have {n}")
    order = np.arange(n) if secs is None else np.argsort(secs, kind="stable")
    n_hold = math.ceil(n * holdout_fraction)
    return np.sort(order[: n - n_hold]), np.sort(order[n - n_hold :])


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """accuracy, auc (when both classes occur), log_loss, positive_rate (predicted), label_rate.

    >>> binary_metrics(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4]))["accuracy"]
    0.6666666666666666
    """
    y = _labels(labels)
    if y.size == 0:
        raise ValueError("cannot compute metrics on 0 rows")
    predicted = scores >= threshold
    out = {
        "accuracy": float(np.mean(predicted == (y == 1))),
        "log_loss": float(log_loss(y, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "positive_rate": float(np.mean(predicted)),
        "label_rate": float(np.mean(y)),
    }
    if 0 < y.sum() < y.size:
        out["auc"] = float(roc_auc_score(y, scores))
    return out


def evaluate(
    session: ModelSession,
    numeric: Mapping[str, Column],
    categorical: Mapping[str, Column],
    labels: np.ndarray,
) -> dict[str, float]:
    """`binary_metrics` of the session's scores on these rows (at the session's threshold)."""
    y = _labels(labels)
    scores = session.score_events({**numeric, **categorical}, len(y))
    return binary_metrics(y, scores, session.threshold)


def _make_estimator(estimator: Estimator, seed: int) -> tuple[Any, Any]:
    """(model to fit, its final classifier step)."""
    if estimator == "logreg":
        clf: Any = LogisticRegression(max_iter=1000)
        return Pipeline([("scale", StandardScaler()), ("clf", clf)]), clf
    if estimator == "gbt":
        clf = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=seed)
        return clf, clf
    raise ValueError(f"unknown estimator {estimator!r}: use 'logreg' or 'gbt'")


def register_trained(
    registry: ModelRegistry,
    name: str,
    trained: TrainedModel,
    stage: Literal["candidate", "production"],
    inputs: VersionInputs | None = None,
) -> ModelVersion:
    """Register a trained model with its training info, reference distributions and, when given,
    its input contract (the feature view that built its inputs, the raw fields' kinds)."""
    return registry.register(
        name,
        trained.onnx_bytes,
        trained.features,
        training=trained.training,
        reference=trained.reference,
        score_reference=trained.score_reference,
        stage=stage,
        inputs=inputs,
    )


def boolean_values(col: Column) -> np.ndarray:
    """float64 1/0 of a boolean column (True/False, or the 1.0/0.0 the feature store makes of
    them), NaN where missing.

    >>> boolean_values([True, False, None, 1.0]).tolist()
    [1.0, 0.0, nan, 1.0]
    """
    return numeric_values(col, len(col))


def boolean_reference(values: np.ndarray) -> Distribution:
    """The two-bin categorical reference of a boolean column (``"true"``/``"false"`` shares of
    the present values): the drift detectors see a boolean as a two-level category."""
    n = values.size
    present = values[~np.isnan(values)]
    share = float(present.mean()) if present.size else 0.0
    return Distribution(
        kind="categorical",
        frequencies={"false": 1.0 - share, "true": share} if present.size else {},
        missing_rate=1.0 - present.size / max(n, 1),
        count=n,
    )


def describe_columns(
    numeric: Mapping[str, Column],
    categorical: Mapping[str, Column],
    rng: np.random.Generator,
    boolean: Mapping[str, Column] | None = None,
) -> tuple[list[FeatureSpec], dict[str, Distribution]]:
    """Feature specs (median fill values, top categories, majority booleans) and reference
    distributions of columns."""
    features: list[FeatureSpec] = []
    reference: dict[str, Distribution] = {}
    for name, col in (boolean or {}).items():
        values = boolean_values(col)
        present = values[~np.isnan(values)]
        fill = 1.0 if present.size and present.mean() >= 0.5 else 0.0
        features.append(FeatureSpec(name=name, kind="boolean", fill_value=fill))
        reference[name] = boolean_reference(values)
    for name, col in numeric.items():
        n = len(col)
        values = numeric_values(col, n)
        present = values[~np.isnan(values)]
        fill = float(np.median(present)) if present.size else 0.0
        features.append(FeatureSpec(name=name, kind="numeric", fill_value=fill))
        reference[name] = Distribution(
            kind="numeric", sample=_sample(present, rng), missing_rate=1.0 - present.size / max(n, 1), count=n
        )
    for name, col in categorical.items():
        mask, strings = _strings(col)
        categories, freqs = _top_categories(strings, MAX_CATEGORIES)
        features.append(FeatureSpec(name=name, kind="categorical", categories=categories))
        reference[name] = Distribution(
            kind="categorical",
            frequencies=freqs,
            missing_rate=1.0 - float(mask.mean()) if len(col) else 0.0,
            count=len(col),
        )
    return features, reference


def warm_references(
    warmup: Warmup, numeric: Mapping[str, np.ndarray], secs: np.ndarray, seed: int = 0
) -> dict[str, Distribution]:
    """The reference of each windowed aggregate in `numeric` from its warm rows only (times
    `secs`: `feature_store.warmup`), marked with its warm-up; an aggregate with fewer than
    ``MIN_WARM_ROWS`` warm rows (a 24 h window over a shorter training set) gets none here."""
    rng = np.random.default_rng([seed, 1])  # its own: the other references' samples stay as they were
    out: dict[str, Distribution] = {}
    for name, col in numeric.items():
        need = warmup.seconds.get(name)
        if need is None or not math.isfinite(need):
            continue
        warm = warmup.mask(name, secs)
        if int(warm.sum()) < MIN_WARM_ROWS:
            continue
        _, described = describe_columns({name: np.asarray(col)[warm]}, {}, rng)
        out[name] = described[name].model_copy(update={"warmup_seconds": need})
    return out


def warm_score_reference(
    warmup: Warmup,
    inputs: Mapping[str, object],
    secs: np.ndarray,
    scores: np.ndarray,
    rng: np.random.Generator,
) -> Distribution | None:
    """The score's reference from the holdout rows on which every aggregate input is warm (the
    score is a function of them all, so its warm-up is their longest), marked with that warm-up;
    None when the model reads no aggregate, one never warm (a lifetime count) or too few such rows."""
    needs = [warmup.seconds[name] for name in inputs if name in warmup.seconds]
    if not needs or not math.isfinite(need := max(needs)):
        return None
    warm = secs - warmup.since >= need
    if int(warm.sum()) < MIN_WARM_ROWS:
        return None
    return Distribution(
        kind="numeric", sample=_sample(scores[warm], rng), count=int(warm.sum()), warmup_seconds=need
    )


def train_model(
    numeric: Mapping[str, np.ndarray],
    categorical: Mapping[str, np.ndarray],
    labels: np.ndarray,
    ts: np.ndarray | None = None,
    estimator: Estimator = "logreg",
    holdout_fraction: float = 0.2,
    seed: int = 0,
    source: str = "",
    boolean: Mapping[str, np.ndarray] | None = None,
    warmup: Warmup | None = None,
) -> TrainedModel:
    """Fit `estimator` on the earliest rows, export to ONNX, measure the ONNX model on the rest.

    `numeric` columns: numbers, NaN/None = missing; `categorical` columns: strings, None = missing;
    `boolean` columns: True/False (or 1/0), None/NaN = missing, encoded as one 0/1 column.
    `ts`: datetime64, epoch seconds or datetime objects (naive = UTC), one per row.
    `warmup` (the replay's, with `ts`): the reference of each windowed aggregate is built from its
    warm training rows only and marked so (`warm_references`); the model still trains on every row.
    """
    y = _labels(labels)
    n = y.size
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    boolean = dict(boolean or {})
    clash = (set(numeric) & set(categorical)) | (set(boolean) & (set(numeric) | set(categorical)))
    if clash:
        raise ValueError(f"features both numeric and categorical (or boolean): {sorted(clash)}")
    if not numeric and not categorical and not boolean:
        raise ValueError("no features given")
    for name, col in {**numeric, **categorical, **boolean}.items():
        if len(col) != n:
            raise ValueError(f"feature {name!r} has {len(col)} values, labels have {n}")

    secs = None if ts is None else _epoch_seconds(np.asarray(ts))
    train_idx, hold_idx = time_split(n, holdout_fraction, secs)
    if train_idx.size < 2 or hold_idx.size < 1:
        raise ValueError(f"{n} rows are too few to train with a {holdout_fraction:.0%} holdout")
    if np.unique(y[train_idx]).size < 2:
        raise ValueError("the training rows need both classes (0 and 1)")

    rng = np.random.default_rng(seed)
    train_numeric = {name: np.asarray(col)[train_idx] for name, col in numeric.items()}
    train_categorical = {name: np.asarray(col)[train_idx] for name, col in categorical.items()}
    train_boolean = {name: np.asarray(col)[train_idx] for name, col in boolean.items()}
    features, reference = describe_columns(train_numeric, train_categorical, rng, train_boolean)
    if warmup is not None and secs is not None:
        reference.update(warm_references(warmup, train_numeric, secs[train_idx], seed))

    columns: dict[str, Column] = {**numeric, **categorical, **boolean}
    X = encode_features(features, columns, n)
    if X.shape[1] == 0:
        raise ValueError("the features encode to 0 columns (categoricals with no values in training?)")
    model, clf = _make_estimator(estimator, seed)
    model.fit(X[train_idx], y[train_idx])

    onnx_model = convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, X.shape[1]]))],
        options={id(clf): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    onnx_bytes: bytes = onnx_model.SerializeToString()
    session = ModelSession.open(onnx_bytes, features, ref=f"trained {estimator}")
    hold_scores = session.predict(X[hold_idx])

    start = end = None
    if secs is not None:
        start = datetime.fromtimestamp(float(secs.min()), UTC)
        end = datetime.fromtimestamp(float(secs.max()), UTC)
    training = TrainingInfo(
        estimator=estimator,
        trained_at=datetime.now(UTC),
        rows=int(train_idx.size),
        holdout_rows=int(hold_idx.size),
        data_start=start,
        data_end=end,
        metrics=binary_metrics(y[hold_idx], hold_scores),
        source=source,
        calibration=ScoreCalibration.fit(hold_scores, y[hold_idx]),
    )
    score_reference = Distribution(kind="numeric", sample=_sample(hold_scores, rng), count=int(hold_idx.size))
    if warmup is not None and secs is not None:
        score_reference = (
            warm_score_reference(warmup, columns, secs[hold_idx], hold_scores, rng) or score_reference
        )
    return TrainedModel(onnx_bytes, features, training, reference, score_reference, sklearn_model=model)
