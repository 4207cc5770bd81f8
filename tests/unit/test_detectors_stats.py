"""PSI, KS, Wasserstein, BH and the binning against direct numpy/scipy computations."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from scipy import stats

from detectors.calibration import normalised_wasserstein
from detectors.ks import KSWindow, benjamini_hochberg, ks_critical_value, ks_p_value, ks_statistic
from detectors.psi import PSIWindow, psi_from_counts, psi_p_value
from detectors.reference import EPS, Binning, Reference, is_missing


def _direct_psi(window: np.ndarray, sample: np.ndarray, missing_rate: float, n_bins: int = 10) -> float:
    """PSI written out from scratch: np.histogram on the reference quantile edges, eps smoothing."""
    edges = np.unique(np.quantile(sample, np.linspace(0, 1, n_bins + 1)[1:-1], method="lower"))
    full = np.concatenate([[-np.inf], edges, [np.inf]])
    present = window[~np.isnan(window)]
    w_counts = np.array([np.sum((present >= lo) & (present < hi)) for lo, hi in pairwise(full)])
    w_counts = np.append(w_counts, np.isnan(window).sum())
    r_counts = np.array([np.sum((sample >= lo) & (sample < hi)) for lo, hi in pairwise(full)])
    r_props = np.append(r_counts / sample.size * (1 - missing_rate), missing_rate)
    k = w_counts.size
    w = (w_counts / w_counts.sum() + EPS) / (1 + k * EPS)
    r = (r_props + EPS) / (1 + k * EPS)
    return float(np.sum((w - r) * np.log(w / r)))


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_psi_equals_direct_computation(shift: float) -> None:
    rng = np.random.default_rng(11)
    sample = rng.lognormal(3.0, 1.0, size=5000)
    ref = Reference(kind="numeric", sample=sample.tolist(), missing_rate=0.02, count=20_000)
    window = rng.lognormal(3.0 + shift, 1.0, size=5000)
    window[rng.random(5000) < 0.05] = np.nan
    window[:3] = sample[:3]  # values exactly on reference points (and possibly edges)

    psi = PSIWindow(ref, "amount", window_size=5000, min_count=1)
    evals = psi.evaluate(window, np.arange(5000.0))
    expected = _direct_psi(window, sample, 0.02)
    assert len(evals) == 1
    assert evals[0].statistic == pytest.approx(expected, abs=1e-9)
    assert psi_from_counts(psi.bin_counts(window), psi.reference_props) == pytest.approx(expected, abs=1e-9)
    assert int(psi.bin_counts(window).sum()) == 5000


def test_psi_counts_are_mergeable() -> None:
    rng = np.random.default_rng(3)
    ref = Reference.from_values(rng.normal(size=5000))
    psi = PSIWindow(ref, "x")
    x = rng.normal(0.2, 1.0, size=3000)
    parts = [psi.bin_counts(x[:1000]), psi.bin_counts(x[1000:1700]), psi.bin_counts(x[1700:])]
    merged = parts[0] + parts[1] + parts[2]
    assert np.array_equal(merged, psi.bin_counts(x))
    assert psi_from_counts(merged, psi.reference_props) == psi_from_counts(
        psi.bin_counts(x), psi.reference_props
    )


def test_psi_p_value_is_pearson_chi_square() -> None:
    rng = np.random.default_rng(8)
    ref = np.array([0.2, 0.3, 0.5, 0.0])
    counts = np.array([30, 25, 45, 0])
    x2, _ = stats.chisquare(counts[:3], 100 * ref[:3])
    assert psi_p_value(counts, ref, 0) == pytest.approx(stats.chi2.sf(x2, 2), rel=1e-9)
    table = np.array([counts[:3], ref[:3] * 400])
    assert psi_p_value(counts, ref, 400) == pytest.approx(
        stats.chi2_contingency(table, correction=False).pvalue, rel=1e-9
    )
    # calibrated on small windows: about alpha of no-drift windows reject
    p = np.array([0.1] * 10)
    rejects = [psi_p_value(rng.multinomial(30, p), p, 5000) < 0.01 for _ in range(4000)]
    assert 0.004 < np.mean(rejects) < 0.02
    # an unseen category taking a third of the window is significant
    assert psi_p_value(np.array([20, 30, 50, 50]), ref, 5000) < 1e-10


def test_small_time_windows_do_not_alert_on_noise() -> None:
    rng = np.random.default_rng(5)
    ref = Reference.from_values(rng.normal(size=5000))
    psi = PSIWindow(ref, "x", window_seconds=1.0, min_count=10)
    n = 20_000
    ts = np.sort(rng.uniform(0, 1000, n))  # ~20 events per window: PSI is large by chance
    signals = psi.update(rng.normal(size=n), ts)
    assert len(psi.windows) > 900
    noisy = sum(w.statistic >= 0.2 for w in psi.windows)
    assert noisy > 500  # PSI alone would alert on most windows...
    assert len(signals) <= 5  # ...the significance test lets about alpha = 0.1% through


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ks_equals_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sample = rng.normal(size=5000)
    ref = Reference(kind="numeric", sample=sample.tolist(), count=5000)
    window = rng.normal(0.05 * seed, 1.0 + 0.05 * seed, size=4000)
    ks = KSWindow(ref, "x", window_size=4000)
    (ev,) = ks.evaluate(window, np.arange(4000.0))
    expected = stats.ks_2samp(window, sample, method="asymp")
    assert ev.statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert ev.p_value == pytest.approx(expected.pvalue, rel=0.05, abs=1e-12)
    assert ks_p_value(ev.statistic, 4000, 5000, method="kstwo") == pytest.approx(expected.pvalue, rel=1e-9)
    w1 = stats.wasserstein_distance(window, sample)
    assert ev.effect_size == pytest.approx(w1 / np.std(sample, ddof=1), abs=1e-9)
    assert normalised_wasserstein(window, ref) == pytest.approx(ev.effect_size, abs=1e-12)


def test_ks_statistic_with_ties_equals_scipy() -> None:
    rng = np.random.default_rng(9)
    for _ in range(50):
        m, n = int(rng.integers(2, 2000)), int(rng.integers(1, 2000))
        ref = np.sort(rng.integers(0, 4, size=m).astype(float))
        win = rng.integers(0, 5, size=n).astype(float)
        d, w1 = ks_statistic(ref, win)
        assert d == pytest.approx(stats.ks_2samp(win, ref).statistic, abs=1e-12)
        assert w1 == pytest.approx(stats.wasserstein_distance(win, ref), abs=1e-9)


def test_ks_p_value_close_to_asymp_over_the_useful_range() -> None:
    for n, m in [(300, 5000), (2000, 5000), (5000, 5000), (20_000, 5000)]:
        for p_target in [0.5, 1e-2, 1e-4, 1e-6, 1e-8]:
            d = ks_critical_value(p_target, n, m)
            exact = stats.kstwo.sf(d, round(n * m / (n + m)))
            assert ks_p_value(d, n, m) == pytest.approx(exact, rel=0.05)
            assert ks_p_value(d, n, m) == pytest.approx(p_target, rel=1e-6)


def test_benjamini_hochberg_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        p = np.concatenate([rng.random(30), rng.random(5) * 1e-4])
        rng.shuffle(p)
        adjusted = stats.false_discovery_control(p, method="bh")
        assert np.array_equal(benjamini_hochberg(p, 0.05), adjusted <= 0.05)
    assert benjamini_hochberg([], 0.05).tolist() == []
    assert benjamini_hochberg([float("nan"), 0.0], 0.05).tolist() == [False, True]


def test_binning_layouts() -> None:
    flag = Reference(kind="numeric", sample=[0.0] * 700 + [1.0] * 300, count=1000)
    b = Binning.from_reference(flag)
    assert b.edges.tolist() == [0.0, 1.0]  # ties merge quantile bins
    assert b.reference_proportions.tolist() == [0.0, 0.7, 0.3, 0.0]
    assert b.counts(np.array([0.0, 1.0, 1.0, -3.0, np.nan])).tolist() == [1, 1, 2, 1]

    cat = Reference(
        kind="categorical",
        frequencies={"a": 0.5, "b": 0.3, "__other__": 0.2},
        missing_rate=0.1,
        count=100,
        other_category="__other__",
    )
    cb = Binning.from_reference(cat)
    assert cb.labels == ["a", "b", "unseen", "missing"]
    assert cb.reference_proportions == pytest.approx([0.45, 0.27, 0.18, 0.1])
    values = np.array(["a", "zzz", None, float("nan"), 7, "b", "__other__"], dtype=object)
    assert cb.bin_indices(values).tolist() == [0, 2, 3, 3, 2, 1, 2]
    assert cb.bin_indices(np.array(["a", "b", "q"])).tolist() == [0, 1, 2]  # a str array
    assert cb.bin_indices(np.full(2, np.nan)).tolist() == [3, 3]  # an absent column: all missing
    assert is_missing(values).tolist() == [False, False, True, True, False, False, False]


def test_reference_validation() -> None:
    with pytest.raises(ValueError, match="finite"):
        Reference(kind="numeric", sample=[1.0, float("nan")])
    with pytest.raises(ValueError, match="frequencies"):
        Reference(kind="numeric", sample=[1.0], frequencies={"a": 1.0})
    with pytest.raises(ValueError, match="numeric reference"):
        KSWindow(Reference(kind="categorical", frequencies={"a": 1.0}), "c")
