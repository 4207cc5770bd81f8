"""A jump in a feature's missing rate against the reference (upstream breakage, a renamed field).

Per closed window: ``k`` missing (None or NaN) out of ``n`` events, tested one-sided against the
reference rate ``p0`` with the exact binomial tail ``P(X >= k | n, p0)``. A window signals when
that p-value is below ``alpha`` (1e-3) **and** the rate rose by at least ``warning_increase``
(0.02, absolute) - "critical" from ``critical_increase`` (0.10). The statistic is the window's
missing rate, the effect size its increase over ``p0``. Falling missing rates are not reported.

>>> import numpy as np
>>> ref = Reference(kind="numeric", sample=[0.0, 1.0], missing_rate=0.01, count=10_000)
>>> mr = MissingRate(ref, feature="amount", window_size=1000)
>>> x = np.ones(1000); x[:300] = np.nan
>>> s = mr.update(x, ts=np.arange(1000.0))[0]
>>> s.severity, s.statistic, round(s.effect_size, 2)
('critical', 0.3, 0.29)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from detectors.base import CountPanes, Evaluation, WindowedDetector, grade
from detectors.reference import Reference, is_missing
from detectors.signals import DriftSignal, fmt
from detectors.windowing import Assignment, ClosedWindow


def missing_p_value(k: int, n: int, p0: float) -> float:
    """One-sided binomial p-value ``P(X >= k)`` for ``X ~ Binomial(n, p0)``.

    >>> missing_p_value(0, 100, 0.1), missing_p_value(5, 100, 0.0)
    (1.0, 0.0)
    """
    if k <= 0:
        return 1.0
    return float(stats.binom.sf(k - 1, n, p0))


class MissingRate(CountPanes, WindowedDetector):
    """Missing-rate increase per closed window (windows as `detectors.psi.PSIWindow`'s)."""

    detector = "missing_rate"

    def __init__(
        self,
        reference: Reference,
        feature: str = "value",
        window_size: int | None = None,
        window_seconds: float | None = None,
        step: float | None = None,
        alpha: float = 1e-3,
        warning_increase: float = 0.02,
        critical_increase: float = 0.10,
        allowed_lateness: float = 0.0,
        min_count: int = 100,
    ) -> None:
        super().__init__(reference, feature, window_size, window_seconds, step, allowed_lateness, min_count)
        self.alpha = alpha
        self.warning_increase = warning_increase
        self.critical_increase = critical_increase
        self.p0 = reference.missing_rate
        self._counts: dict[int, np.ndarray] = {}  # pane -> [events, missing]

    def _accumulate(self, values: np.ndarray, a: Assignment) -> None:
        miss = is_missing(values)
        if a.panes.size == 1:
            per_pane = np.array([[miss.size, int(np.count_nonzero(miss))]])
        else:
            n = np.bincount(a.inverse, minlength=a.panes.size)
            k = np.bincount(a.inverse, weights=miss, minlength=a.panes.size).astype(np.int64)
            per_pane = np.stack([n, k], axis=1)
        for p, c in zip(a.panes.tolist(), per_pane, strict=True):
            current = self._counts.get(p)
            self._counts[p] = c.astype(np.int64) if current is None else current + c

    def evaluate_counts(self, n: int, k: int, window: ClosedWindow) -> Evaluation | None:
        """Evaluation of a window with `k` missing out of `n` (also used on merged counts)."""
        if n < self.min_count:
            return None
        rate = k / n
        return Evaluation(
            detector="missing_rate",
            feature=self.feature,
            window=window,
            statistic=rate,
            threshold=self.p0 + self.warning_increase,
            p_value=missing_p_value(k, n, self.p0),
            effect_size=rate - self.p0,
            n_window=n,
            n_reference=self.reference.n,
        )

    def _evaluate(self, window: ClosedWindow) -> Evaluation | None:
        total = np.zeros(2, dtype=np.int64)
        for p in window.panes:
            if p in self._counts:
                total += self._counts[p]
        return self.evaluate_counts(int(total[0]), int(total[1]), window)

    def _drop(self, pane: int) -> None:
        self._counts.pop(pane, None)

    def signal(self, evaluation: Evaluation, significant: bool | None = None) -> DriftSignal | None:
        if significant is None:
            significant = evaluation.p_value is not None and evaluation.p_value < self.alpha
        graded = grade(evaluation.effect_size or 0.0, self.warning_increase, self.critical_increase)
        if not significant or graded is None:
            return None
        severity, increase = graded
        msg = (
            f"{self.feature}: missing rate {fmt(evaluation.statistic)} vs {fmt(self.p0)} in the reference "
            f"({severity}) over {evaluation.n_window} events"
        )
        return evaluation.to_signal(severity, self.p0 + increase, msg)

    def _config(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "window_size": self.spec.size,
            "window_seconds": self.spec.seconds,
            "step": self.spec.step,
            "alpha": self.alpha,
            "warning_increase": self.warning_increase,
            "critical_increase": self.critical_increase,
            "allowed_lateness": self.spec.allowed_lateness,
            "min_count": self.min_count,
        }
