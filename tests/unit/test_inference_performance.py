"""Live performance windows, score calibration and confidence-based accuracy estimates."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from inference.metadata import ModelVersion, TrainingInfo
from inference.performance import PerformanceWindow, ScoreCalibration
from inference.training import train_model

IDENTITY = ScoreCalibration(x_thresholds=[0.0, 1.0], y_thresholds=[0.0, 1.0])


def _batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, size=n)
    scores = 0.3 * labels + rng.uniform(0.0, 0.7, size=n)
    # Certain and wrong, so the clipping in the log loss matters.
    scores[:2], labels[:2] = [0.0, 1.0], [1, 0]
    return scores, labels


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_window_metrics_equal_sklearn_on_the_last_items(threshold: float) -> None:
    rng = np.random.default_rng(3)
    size = 100
    window = PerformanceWindow(size=size, threshold=threshold)
    all_scores: list[np.ndarray] = []
    all_labels: list[np.ndarray] = []
    for n in [37, 80, 5, 150, 63, 71, 99]:  # wraps the ring, overfills it, wraps again
        scores, labels = _batch(rng, n)
        window.update(scores, labels)
        all_scores.append(scores)
        all_labels.append(labels)
        s = np.concatenate(all_scores)[-size:]
        y = np.concatenate(all_labels)[-size:]
        perf = window.metrics()
        assert perf.n == s.size
        expected_accuracy = accuracy_score(y, s >= threshold)
        assert perf.accuracy == pytest.approx(expected_accuracy, abs=1e-12)
        assert perf.error_rate == pytest.approx(1.0 - expected_accuracy, abs=1e-12)
        clipped = np.clip(s, 1e-15, 1 - 1e-15)
        assert perf.log_loss == pytest.approx(log_loss(y, clipped, labels=[0, 1]), abs=1e-12)
        assert perf.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert perf.log_loss is not None and perf.log_loss > 1.0  # the certain-and-wrong rows count


def test_auc_is_none_with_one_class_and_everything_with_no_outcomes() -> None:
    window = PerformanceWindow(size=10)
    empty = window.metrics()
    assert empty.n == 0 and empty.accuracy is None and empty.log_loss is None and empty.auc is None
    window.update(np.array([0.2, 0.9, 0.4]), np.array([0, 0, 0]))
    perf = window.metrics()
    assert perf.auc is None
    assert perf.accuracy == pytest.approx(2 / 3)


def test_bad_batches_are_refused_and_leave_the_window_unchanged() -> None:
    window = PerformanceWindow(size=10)
    window.update(np.array([0.2, 0.9]), np.array([0, 1]))
    before = window.metrics()
    with pytest.raises(ValueError, match="0/1"):
        window.update(np.array([0.2]), np.array([2]))
    with pytest.raises(ValueError, match="shape"):
        window.update(np.array([0.2, 0.3]), np.array([1]))
    with pytest.raises(ValueError, match="finite"):
        window.update(np.array([np.nan]), np.array([1]))
    with pytest.raises(ValueError, match="size"):
        PerformanceWindow(size=0)
    assert window.metrics() == before


def _bernoulli(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(true P(label = 1), labels drawn from it)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    return p, (rng.random(n) < p).astype(np.int64)


def test_expected_accuracy_of_calibrated_scores_matches_the_realised_accuracy() -> None:
    fit_p, fit_y = _bernoulli(10, 20_000)
    p, y = _bernoulli(11, 20_000)
    realised = accuracy_score(y, p >= 0.5)
    calibration = ScoreCalibration.fit(fit_p, fit_y)
    assert calibration.expected_accuracy(p) == pytest.approx(realised, abs=0.02)
    assert IDENTITY.expected_accuracy(p) == pytest.approx(realised, abs=0.02)


def test_calibration_corrects_a_miscalibrated_score() -> None:
    fit_p, fit_y = _bernoulli(12, 20_000)
    p, y = _bernoulli(13, 20_000)
    score = p**3  # ranks right, but far from P(label = 1)
    realised = accuracy_score(y, score >= 0.5)
    calibration = ScoreCalibration.fit(fit_p**3, fit_y)
    assert calibration.expected_accuracy(score) == pytest.approx(realised, abs=0.02)
    assert abs(IDENTITY.expected_accuracy(score) - realised) > 0.1


def test_window_estimates_accuracy_from_its_recent_predictions() -> None:
    fit_p, fit_y = _bernoulli(14, 20_000)
    calibration = ScoreCalibration.fit(fit_p, fit_y)
    window = PerformanceWindow(size=5000, calibration=calibration)
    assert window.metrics().estimated_accuracy is None
    window.update(fit_p[:100], fit_y[:100])  # labeled outcomes are not predictions again
    assert window.metrics().predictions == 0
    old = np.full(8000, 0.5)  # coin flips, pushed out by the newer predictions
    recent, _ = _bernoulli(15, 5000)
    window.update_scores(old)
    window.update_scores(recent[:3000])
    window.update_scores(recent[3000:])
    perf = window.metrics()
    assert perf.predictions == 5000
    assert perf.estimated_accuracy == pytest.approx(calibration.expected_accuracy(recent), abs=1e-12)
    assert perf.estimated_accuracy is not None and perf.estimated_accuracy > 0.7
    assert PerformanceWindow(size=5000).metrics().estimated_accuracy is None


def test_calibration_is_monotone_clipped_and_validated() -> None:
    cal = ScoreCalibration.fit(np.array([0.2, 0.4, 0.6, 0.8]), np.array([0, 1, 0, 1]))
    out = cal.calibrate(np.array([-1.0, 0.2, 0.5, 0.8, 2.0]))
    assert out.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert ScoreCalibration.model_validate_json(cal.model_dump_json()) == cal
    with pytest.raises(ValidationError, match="increasing"):
        ScoreCalibration(x_thresholds=[0.5, 0.2], y_thresholds=[0.1, 0.2])
    with pytest.raises(ValidationError, match="probabilities"):
        ScoreCalibration(x_thresholds=[0.2, 0.5], y_thresholds=[0.1, 1.2])
    with pytest.raises(ValidationError, match="probabilities"):
        ScoreCalibration(x_thresholds=[0.2, 0.5], y_thresholds=[0.6, 0.2])
    with pytest.raises(ValidationError, match="thresholds"):
        ScoreCalibration(x_thresholds=[0.2, 0.5], y_thresholds=[0.1])
    with pytest.raises(ValueError, match="0 scores"):
        ScoreCalibration.fit(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="0 scores"):
        cal.expected_accuracy(np.array([]))


def test_train_model_stores_a_holdout_calibration_that_round_trips() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2.0 * x))).astype(np.int64)
    trained = train_model({"x": x}, {}, y, holdout_fraction=0.2)
    cal = trained.training.calibration
    assert cal is not None and len(cal.x_thresholds) > 2
    # Fitted on the holdout scores: its estimate there agrees with the measured holdout accuracy.
    hold = slice(n - 600, n)
    hold_scores = trained.session().score_events({"x": x}, n)[hold]
    estimate = cal.expected_accuracy(hold_scores)
    assert estimate == pytest.approx(trained.training.metrics["accuracy"], abs=0.02)

    mv = ModelVersion(
        name="fraud",
        version=1,
        sha256=trained.sha256,
        features=trained.features,
        input_name="input",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        stage="candidate",
        training=trained.training,
    )
    loaded = ModelVersion.model_validate_json(mv.model_dump_json())
    assert loaded == mv
    assert loaded.training is not None and loaded.training.calibration == cal
    assert np.array_equal(loaded.training.calibration.calibrate(hold_scores), cal.calibrate(hold_scores))


def test_training_info_without_calibration_still_loads() -> None:
    old = {
        "estimator": "logreg",
        "trained_at": "2026-01-01T00:00:00Z",
        "rows": 80,
        "holdout_rows": 20,
        "metrics": {"auc": 0.9},
    }
    assert TrainingInfo.model_validate(old).calibration is None


def test_metadata_does_not_import_sklearn() -> None:
    code = "import sys, inference.metadata; sys.exit('sklearn' in sys.modules)"
    root = Path(__file__).parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
