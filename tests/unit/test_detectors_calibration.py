"""Calibration: thresholds meet the false-alarm budget; severity needs an effect, not just n."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors.calibration import (
    calibrate_ks,
    calibrate_psi,
    false_alarm_probability,
    psi_null,
    severity,
)
from detectors.ks import KSWindow
from detectors.psi import PSIWindow, psi_many
from detectors.reference import Binning, Reference


def _reference(seed: int) -> Reference:
    return Reference.from_values(np.random.default_rng(seed).lognormal(3.0, 1.0, size=5000))


def test_psi_threshold_meets_the_budget_on_real_windows() -> None:
    """Windows from the true distribution (not the reference sample) exceed it about alpha of the time."""
    cal = calibrate_psi(_reference(0), window_size=2000, ert_events=200_000, seed=1)
    assert cal.alpha == pytest.approx(0.01) and cal.n_boot == 20_000
    windows = np.random.default_rng(2).lognormal(3.0, 1.0, size=(800, 2000))
    # the reference sample is itself one draw: average the false-alarm rate over fresh references
    rates = []
    for seed in range(5):
        ref = _reference(100 + seed)
        c = calibrate_psi(ref, window_size=2000, ert_events=200_000, seed=seed)
        b = Binning.from_reference(ref)
        counts = np.stack([b.counts(w) for w in windows])
        rates.append(np.mean(psi_many(counts, b.reference_proportions) > c.threshold))
    assert 0.005 < np.mean(rates) < 0.02  # measured 0.0098 for a 1% budget


def test_psi_null_matches_its_chi_square_approximation() -> None:
    props = np.full(10, 0.1)
    null = psi_null(props, window_size=5000, n_reference=5000, n_boot=50_000, seed=3)
    # PSI ~ chi2(k - 1) * (1/n + 1/m) for large counts
    expected = stats.chi2.ppf(0.99, 9) * (2 / 5000)
    assert np.quantile(null, 0.99) == pytest.approx(expected, rel=0.05)


def test_bigger_budget_means_higher_threshold() -> None:
    ref = _reference(4)
    low = calibrate_psi(ref, 5000, ert_events=1e6)
    high = calibrate_psi(ref, 5000, ert_events=1e8)
    assert high.alpha < low.alpha and high.threshold > low.threshold
    assert high.n_boot >= 50 / high.alpha


def test_ks_asymptotic_and_bootstrap_agree_for_continuous_data() -> None:
    ref = _reference(5)
    asym = calibrate_ks(ref, window_size=1000, ert_events=100_000)  # alpha = 1%
    boot = calibrate_ks(ref, window_size=1000, ert_events=100_000, method="bootstrap", n_boot=3000, seed=6)
    assert asym.alpha == boot.alpha == pytest.approx(0.01)
    assert boot.threshold == pytest.approx(asym.threshold, rel=0.15)
    with pytest.raises(ValueError, match="n_boot"):
        calibrate_ks(ref, window_size=1000, ert_events=1e8, method="bootstrap", n_boot=100)


def test_false_alarm_probability_shares_the_budget() -> None:
    assert false_alarm_probability(5000, 1e7) == 5e-4
    assert false_alarm_probability(5000, 1e7, n_tests=14) == pytest.approx(5e-4 / 14)
    assert false_alarm_probability(10, 5) == 1.0
    with pytest.raises(ValueError):
        false_alarm_probability(0, 1e7)


def test_huge_window_tiny_effect_is_not_critical() -> None:
    rng = np.random.default_rng(7)
    sample = rng.normal(size=5000)
    ref = Reference(kind="numeric", sample=sample.tolist(), count=5000)
    n = 200_000
    window = rng.normal(0.04, 1.0, size=n)  # a real but negligible shift
    ks = KSWindow(ref, "x", window_size=n)
    (ev,) = ks.evaluate(window, np.arange(float(n)))
    assert ev.p_value is not None and ev.p_value < 1e-3  # significant...
    assert ev.effect_size is not None and ev.effect_size < 0.1  # ...but tiny
    assert ks.signals([ev]) == []
    psi = PSIWindow(ref, "x", window_size=n)
    assert psi.update(window, np.arange(float(n))) == []
    assert severity(True, ev.effect_size, 0.1, 0.25) is None
    # the same shift at 1 sigma is critical
    (big,) = KSWindow(ref, "x", window_size=n).evaluate(window + 1.0, np.arange(float(n)))
    assert severity(True, big.effect_size or 0.0, 0.1, 0.25) == "critical"
