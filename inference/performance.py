"""Live performance of a model version: realised metrics on labeled outcomes, estimated on the rest.

`PerformanceWindow` keeps the last `size` labeled outcomes (score, label) in numpy ring buffers and
reports accuracy, log loss, AUC and error rate over them. Labels usually arrive late or never, so
it also keeps the last `size` predictions and, given a `ScoreCalibration`, estimates their accuracy
without labels (confidence-based performance estimation, CBPE): the calibrated score is the
probability that the label is 1, hence the probability that the thresholded prediction is right.

The calibration is an isotonic map fitted on the training holdout and stored with the model
version (`TrainingInfo.calibration`), so this module imports only numpy and pydantic at import
time (scikit-learn is imported where it is needed).

>>> calibration = ScoreCalibration(x_thresholds=[0.0, 1.0], y_thresholds=[0.0, 1.0])
>>> window = PerformanceWindow(size=4, calibration=calibration)
>>> window.update(np.array([0.9, 0.2, 0.6]), np.array([1, 0, 0]))
>>> window.update_scores(np.array([0.9, 0.3]))
>>> perf = window.metrics()
>>> perf.n, round(perf.accuracy, 3), perf.auc, round(perf.estimated_accuracy, 3)
(3, 0.667, 1.0, 0.8)
"""

from __future__ import annotations

from typing import Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

PROBABILITY_CLIP = 1e-15


class Performance(BaseModel):
    """Metrics over a window; None where undefined (no outcomes, one class for AUC, no calibration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=0)  # labeled outcomes behind the realised metrics
    accuracy: float | None = None
    log_loss: float | None = None
    auc: float | None = None
    error_rate: float | None = None
    predictions: int = Field(0, ge=0)  # recent predictions behind estimated_accuracy
    estimated_accuracy: float | None = None


class ScoreCalibration(BaseModel):
    """A monotone map from model score to P(label = 1): isotonic regression, linearly interpolated.

    >>> cal = ScoreCalibration.fit(np.array([0.1, 0.3, 0.3, 0.5]), np.array([0, 1, 0, 1]))
    >>> cal.x_thresholds, cal.y_thresholds
    ([0.1, 0.3, 0.5], [0.0, 0.5, 1.0])
    >>> cal.calibrate(np.array([0.0, 0.4, 0.9])).round(6).tolist()
    [0.0, 0.75, 1.0]
    >>> cal.expected_accuracy(np.array([0.3, 0.5]))
    0.75
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    x_thresholds: list[float] = Field(min_length=1)  # scores, increasing
    y_thresholds: list[float] = Field(min_length=1)  # P(label = 1) at those scores, non-decreasing

    @model_validator(mode="after")
    def _monotone_map(self) -> Self:
        x, y = np.asarray(self.x_thresholds), np.asarray(self.y_thresholds)
        if x.size != y.size:
            raise ValueError(f"{x.size} x thresholds but {y.size} y thresholds")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("calibration thresholds must be finite")
        if (np.diff(x) <= 0).any():
            raise ValueError("x thresholds must be strictly increasing")
        if (np.diff(y) < 0).any() or y[0] < 0.0 or y[-1] > 1.0:
            raise ValueError("y thresholds must be non-decreasing probabilities in [0, 1]")
        return self

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray) -> ScoreCalibration:
        """Isotonic regression of 0/1 `labels` on `scores` (clipped outside the fitted range)."""
        from sklearn.isotonic import IsotonicRegression

        s = _scores(scores)
        y = _labels(labels, s.size)
        if s.size == 0:
            raise ValueError("cannot fit a calibration on 0 scores")
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y)
        return cls(
            x_thresholds=iso.X_thresholds_.astype(float).tolist(),
            y_thresholds=iso.y_thresholds_.astype(float).tolist(),
        )

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        """float64 P(label = 1) per score (constant beyond the fitted range)."""
        return np.interp(np.asarray(scores, dtype=np.float64), self.x_thresholds, self.y_thresholds)

    def expected_accuracy(self, scores: np.ndarray, threshold: float = 0.5) -> float:
        """Mean probability that ``score >= threshold`` predicts the label right, without labels."""
        s = np.asarray(scores, dtype=np.float64)
        if s.size == 0:
            raise ValueError("cannot estimate accuracy on 0 scores")
        p = self.calibrate(s)
        return float(np.mean(np.where(s >= threshold, p, 1.0 - p)))


def _scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-d, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s


def _labels(labels: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) like the scores, got {y.shape}")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    return y.astype(np.int8)


class _Ring:
    """The last `size` rows of a fixed-dtype column; order inside is irrelevant to the metrics."""

    def __init__(self, size: int, dtype: type[np.generic]) -> None:
        self.buffer = np.zeros(size, dtype=dtype)
        self.count = 0
        self._pos = 0

    def push(self, values: np.ndarray) -> None:
        size = self.buffer.size
        k = values.size
        if k >= size:
            self.buffer[:] = values[-size:]
            self.count, self._pos = size, 0
            return
        self.buffer[(self._pos + np.arange(k)) % size] = values
        self.count = min(self.count + k, size)
        self._pos = (self._pos + k) % size

    @property
    def values(self) -> np.ndarray:
        return self.buffer[: self.count]  # the buffer fills from index 0 before it wraps


class PerformanceWindow:
    """Metrics of the last `size` labeled outcomes; estimated accuracy of the last `size` predictions.

    Feed every prediction to `update_scores` as it is made, and each labeled outcome to `update`
    when its label arrives (`update` does not add it to the predictions again). `threshold`: scores
    at or above it predict 1. `calibration`: enables `Performance.estimated_accuracy`.
    """

    def __init__(
        self, size: int = 1000, threshold: float = 0.5, calibration: ScoreCalibration | None = None
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.size = size
        self.threshold = threshold
        self.calibration = calibration
        self._scores = _Ring(size, np.float64)
        self._labels = _Ring(size, np.int8)
        self._predictions = _Ring(size, np.float64)

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add labeled outcomes: each event's score and its 0/1 label."""
        s = _scores(scores)
        y = _labels(labels, s.size)
        self._scores.push(s)
        self._labels.push(y)

    def update_scores(self, scores: np.ndarray) -> None:
        """Add predictions (labeled or not) to the window behind the estimated accuracy."""
        self._predictions.push(_scores(scores))

    def metrics(self) -> Performance:
        """Realised metrics of the labeled window and, with a calibration, the estimated accuracy."""
        predictions = self._predictions.values
        estimated = None
        if self.calibration is not None and predictions.size:
            estimated = self.calibration.expected_accuracy(predictions, self.threshold)
        s, y = self._scores.values, self._labels.values
        if s.size == 0:
            return Performance(n=0, predictions=predictions.size, estimated_accuracy=estimated)
        accuracy = float(np.mean((s >= self.threshold) == (y == 1)))
        p = np.clip(s, PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
        log_loss = float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))
        auc = None
        if 0 < int(y.sum()) < y.size:
            from sklearn.metrics import roc_auc_score

            auc = float(roc_auc_score(y, s))
        return Performance(
            n=s.size,
            accuracy=accuracy,
            log_loss=log_loss,
            auc=auc,
            error_rate=1.0 - accuracy,
            predictions=predictions.size,
            estimated_accuracy=estimated,
        )
