"""Thresholds from a false-alarm budget, and severity from significance *and* effect size.

Budget: an expected run time between false alarms, ``ert_events`` (e.g. one per 10,000,000
events). A detector that evaluates a window every ``window_size`` events may then raise a false
alarm with probability ``alpha = window_size / ert_events`` per window (divided by ``n_tests``
when several features share the budget: Bonferroni). `false_alarm_probability` computes it.

* PSI (`calibrate_psi`): a parametric bootstrap of no-drift windows from the reference: the
  reference's bin proportions ``r`` are the truth, a window's counts are ``Multinomial(window_size,
  r)`` and, since the reference itself is a sample, its proportions are redrawn as
  ``Multinomial(n_reference, r) / n_reference``; the threshold is the ``1 - alpha`` quantile of
  PSI(window, reference) over ``n_boot`` such draws. Vectorised (no per-window Python), so
  ``n_boot`` defaults to ``max(20_000, 50 / alpha)`` draws: enough samples beyond the quantile.
* KS (`calibrate_ks`): the asymptotic null distribution of D is known (``kstwo``), so the
  threshold is `detectors.ks.ks_critical_value` at ``alpha``; for features with many ties (0/1
  flags) ``method="bootstrap"`` resamples windows and references from the reference sample instead
  (a loop: it needs ``n_boot >= 10 / alpha`` and refuses otherwise).

Severity (`severity`): significance alone is not enough - a 1,000,000-event window makes a 0.01
standard-deviation shift "significant". A window is graded by its **effect size** (PSI itself, or
the normalised Wasserstein distance ``W1 / reference std`` of `normalised_wasserstein`) only if it
is significant: ``warning`` / ``critical`` effect thresholds decide the grade. The detectors apply
exactly this rule (`detectors.base.grade` after their significance test).

>>> import numpy as np
>>> ref = Reference(kind="numeric", sample=np.random.default_rng(0).normal(size=5000).tolist(), count=5000)
>>> cal = calibrate_psi(ref, window_size=5000, ert_events=10_000_000, seed=0)
>>> cal.alpha, 0.005 < cal.threshold < 0.02
(0.0005, True)
>>> severity(significant=True, effect=0.02, warning=0.1, critical=0.25) is None  # big n, tiny effect
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from detectors.base import grade
from detectors.ks import ks_critical_value, ks_statistic
from detectors.psi import psi_many
from detectors.reference import DEFAULT_BINS, EPS, Binning, Reference
from detectors.signals import Severity

_CHUNK = 50_000


class Calibration(BaseModel):
    """A calibrated threshold and what it was calibrated for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: Literal["psi", "ks"]
    threshold: float
    alpha: float
    window_size: int
    ert_events: float
    n_tests: int
    n_boot: int
    method: Literal["bootstrap", "asymptotic"]


def false_alarm_probability(window_size: int, ert_events: float, n_tests: int = 1) -> float:
    """Allowed false-alarm probability per window and test: ``window_size / (ert_events * n_tests)``.

    >>> false_alarm_probability(5000, 10_000_000), false_alarm_probability(5000, 10_000_000, n_tests=10)
    (0.0005, 5e-05)
    """
    if window_size <= 0 or ert_events <= 0 or n_tests <= 0:
        raise ValueError("window_size, ert_events and n_tests must be positive")
    return min(1.0, window_size / (ert_events * n_tests))


def psi_null(
    reference_props: np.ndarray,
    window_size: int,
    n_reference: int,
    n_boot: int,
    eps: float = EPS,
    seed: int = 0,
) -> np.ndarray:
    """PSI of `n_boot` no-drift windows (multinomial draws; the reference redrawn too)."""
    p = np.asarray(reference_props, dtype=np.float64)
    p = p / p.sum()
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        windows = rng.multinomial(window_size, p, size=size)
        refs = rng.multinomial(n_reference, p, size=size) / n_reference if n_reference > 0 else p
        out[start : start + size] = psi_many(windows, refs, eps)
    return out


def calibrate_psi(
    reference: Reference,
    window_size: int = 5000,
    ert_events: float = 10_000_000,
    n_tests: int = 1,
    n_boot: int | None = None,
    n_bins: int = DEFAULT_BINS,
    eps: float = EPS,
    seed: int = 0,
) -> Calibration:
    """The PSI above which a no-drift window alarms with probability ``window_size / ert_events``."""
    alpha = false_alarm_probability(window_size, ert_events, n_tests)
    n_boot = n_boot or max(20_000, math.ceil(50 / alpha))
    binning = Binning.from_reference(reference, n_bins)
    n_ref = len(reference.sample) if reference.kind == "numeric" else reference.n
    null = psi_null(binning.reference_proportions, window_size, n_ref, n_boot, eps, seed)
    threshold = float(np.quantile(null, 1.0 - alpha, method="higher"))
    return Calibration(
        detector="psi",
        threshold=threshold,
        alpha=alpha,
        window_size=window_size,
        ert_events=ert_events,
        n_tests=n_tests,
        n_boot=n_boot,
        method="bootstrap",
    )


def bootstrap_null(
    reference: Reference,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    window_size: int,
    n_boot: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """``statistic(sorted resampled reference, resampled window)`` for `n_boot` no-drift draws.

    Both are drawn with replacement from the reference sample (the reference at its own size).
    """
    sample = np.asarray(reference.sample, dtype=np.float64)
    if sample.size < 2:
        raise ValueError("bootstrapping needs a numeric reference sample of at least 2 values")
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for i in range(n_boot):
        ref = np.sort(rng.choice(sample, size=sample.size, replace=True))
        win = rng.choice(sample, size=window_size, replace=True)
        out[i] = statistic(ref, win)
    return out


def calibrate_ks(
    reference: Reference,
    window_size: int = 5000,
    ert_events: float = 10_000_000,
    n_tests: int = 1,
    method: Literal["asymptotic", "bootstrap"] = "asymptotic",
    n_boot: int | None = None,
    seed: int = 0,
) -> Calibration:
    """The KS statistic D above which a no-drift window alarms with the budget's probability."""
    alpha = false_alarm_probability(window_size, ert_events, n_tests)
    m = len(reference.sample)
    if method == "asymptotic":
        threshold, n_boot = ks_critical_value(alpha, window_size, m), 0
    else:
        n_boot = n_boot or math.ceil(10 / alpha)
        if n_boot * alpha < 10:
            raise ValueError(
                f"{n_boot} bootstrap windows cannot resolve a {alpha:.2g} tail: "
                f"use n_boot >= {math.ceil(10 / alpha)}"
            )
        null = bootstrap_null(reference, lambda r, w: ks_statistic(r, w)[0], window_size, n_boot, seed)
        threshold = float(np.quantile(null, 1.0 - alpha, method="higher"))
    return Calibration(
        detector="ks",
        threshold=threshold,
        alpha=alpha,
        window_size=window_size,
        ert_events=ert_events,
        n_tests=n_tests,
        n_boot=n_boot,
        method=method,
    )


def normalised_wasserstein(window: np.ndarray, reference: Reference) -> float:
    """``W1(window, reference sample) / std(reference)`` (raw W1 if the reference is constant).

    >>> ref = Reference(kind="numeric", sample=[0.0, 1.0, 2.0, 3.0], count=4)
    >>> round(normalised_wasserstein(np.array([1.0, 2.0, 3.0, 4.0]), ref), 4)
    0.7746
    """
    _, w1 = ks_statistic(reference.sorted_sample(), np.asarray(window, dtype=np.float64))
    std = reference.std()
    return w1 / std if std > 0 else w1


def severity(significant: bool, effect: float, warning: float, critical: float) -> Severity | None:
    """The grade of a window: None unless significant, then by effect size.

    >>> severity(True, 0.3, 0.1, 0.25), severity(True, 0.12, 0.1, 0.25), severity(False, 3.0, 0.1, 0.25)
    ('critical', 'warning', None)
    """
    if not significant:
        return None
    graded = grade(effect, warning, critical)
    return None if graded is None else graded[0]
