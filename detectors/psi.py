"""Population Stability Index of windows against the reference, from mergeable bin counts.

PSI = sum over bins of ``(w - r) * ln(w / r)``, with ``w``/``r`` the window's and the reference's
smoothed proportions (`detectors.reference.smooth`, eps = 1e-4), on the bins of
`detectors.reference.Binning` (numeric: 10 reference-quantile bins; categorical: one per category
plus unseen; both: a missing bin). A window is summarised by its bin counts alone, so counts from
several workers add up (`detectors.window_store`) and `psi_from_counts` gives the same PSI.

Severity: "warning" from PSI >= 0.1, "critical" from 0.2 (the usual rules of thumb), and only if
the difference is also significant (`psi_p_value`, p < ``alpha`` = 1e-3): the chi-square test of
homogeneity of the 2 x k table (window counts, reference proportions times the reference size m),
which accounts for the reference's own sampling noise and for bins one side never saw (an unseen
category). PSI itself is a poor test statistic on small windows - with 20 events most bins are
empty and PSI is large by chance - while the chi-square test keeps its level down to a few events
per bin. That keeps small time windows from alerting on noise; on 5000-event windows it changes
nothing.
`detectors.calibration.calibrate_psi` sets ``warning`` from a false-alarm budget instead.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = Reference(kind="numeric", sample=rng.normal(size=5000).tolist(), count=5000)
>>> psi = PSIWindow(ref, feature="amount", window_size=2000)
>>> psi.update(rng.normal(size=2000), ts=np.arange(2000.0))
[]
>>> [s.severity for s in psi.update(rng.normal(1.0, 1.0, size=2000), ts=np.arange(2000.0, 4000.0))]
['critical']
>>> psi.windows[0].statistic > 0.2
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from detectors.base import CountPanes, Evaluation, WindowedDetector, grade
from detectors.reference import DEFAULT_BINS, EPS, Binning, Reference, smooth
from detectors.signals import DriftSignal, fmt
from detectors.windowing import Assignment, ClosedWindow


def psi_from_counts(window_counts: np.ndarray, reference_props: np.ndarray, eps: float = EPS) -> float:
    """PSI of a window's bin counts against reference proportions (both smoothed with `eps`).

    >>> round(psi_from_counts(np.array([50, 50]), np.array([0.5, 0.5])), 12)
    0.0
    >>> round(psi_from_counts(np.array([90, 10]), np.array([0.5, 0.5])), 4)
    0.8784
    """
    return float(psi_many(np.asarray(window_counts)[None, :], reference_props, eps)[0])


def psi_many(window_counts: np.ndarray, reference_props: np.ndarray, eps: float = EPS) -> np.ndarray:
    """PSI of each row of ``window_counts`` (2-d) against ``reference_props`` (1-d or 2-d)."""
    counts = np.asarray(window_counts, dtype=np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    w = smooth(np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0), eps)
    r = smooth(np.asarray(reference_props, dtype=np.float64), eps)
    result: np.ndarray = np.sum((w - r) * np.log(w / r), axis=-1)
    return result


def psi_p_value(window_counts: np.ndarray, reference_props: np.ndarray, n_reference: int) -> float:
    """P-value of "the window and the reference come from one distribution" (chi-square, see above).

    >>> ref = np.array([0.5, 0.5, 0.0])
    >>> round(psi_p_value(np.array([50, 50, 0]), ref, 5000), 6)
    1.0
    >>> psi_p_value(np.array([400, 600, 0]), ref, 5000) < 1e-8  # a shift
    True
    >>> psi_p_value(np.array([45, 45, 10]), ref, 5000) < 1e-8  # 10% in a bin the reference never saw
    True
    """
    w = np.asarray(window_counts, dtype=np.float64)
    n = float(w.sum())
    props = np.asarray(reference_props, dtype=np.float64)
    if n <= 0 or props.sum() <= 0:
        return 1.0
    if n_reference <= 0:  # reference proportions taken as exact: one-sample Pearson test
        mass = props > 0
        expected = n * props[mass] / props[mass].sum()
        x2 = float(np.sum((w[mass] - expected) ** 2 / expected))
        if w[~mass].sum() > 0:
            return 0.0
        return float(special.chdtrc(max(int(mass.sum()) - 1, 1), x2))
    r = props / props.sum() * n_reference
    column = w + r
    keep = column > 0
    total = n + n_reference
    ew = column[keep] * (n / total)
    er = column[keep] * (n_reference / total)
    x2 = float(np.sum((w[keep] - ew) ** 2 / ew) + np.sum((r[keep] - er) ** 2 / er))
    return float(special.chdtrc(max(int(keep.sum()) - 1, 1), x2))


class PSIWindow(CountPanes, WindowedDetector):
    """PSI per closed window (tumbling by default; ``step`` slides) against a reference.

    ``window_size`` events (default 5000 unless ``window_seconds`` is given) and/or
    ``window_seconds`` of event time; see `detectors.windowing` for the window semantics.
    Windows with fewer than ``min_count`` events are skipped.
    """

    detector = "psi"

    def __init__(
        self,
        reference: Reference,
        feature: str = "value",
        window_size: int | None = None,
        window_seconds: float | None = None,
        step: float | None = None,
        warning: float = 0.1,
        critical: float = 0.2,
        alpha: float = 1e-3,
        eps: float = EPS,
        n_bins: int = DEFAULT_BINS,
        allowed_lateness: float = 0.0,
        min_count: int = 100,
    ) -> None:
        if not 0.0 < warning <= critical:
            raise ValueError(f"need 0 < warning <= critical, got {warning}, {critical}")
        super().__init__(reference, feature, window_size, window_seconds, step, allowed_lateness, min_count)
        self.warning = warning
        self.critical = critical
        self.alpha = alpha
        self.eps = eps
        self.n_bins = n_bins
        self.binning = Binning.from_reference(reference, n_bins)
        self.reference_props = self.binning.reference_proportions
        # Size behind the reference proportions: the sample (numeric) or the row count (categorical).
        self.n_reference = len(reference.sample) if reference.kind == "numeric" else reference.n
        self._counts: dict[int, np.ndarray] = {}

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Events per bin of `values` (int64, ``binning.n_bins`` long): mergeable by addition."""
        return self.binning.counts(np.asarray(values))

    def _accumulate(self, values: np.ndarray, a: Assignment) -> None:
        k = self.binning.n_bins
        bins = self.binning.bin_indices(values)
        if a.panes.size == 1:
            per_pane = np.bincount(bins, minlength=k)[None, :]
        else:
            per_pane = np.bincount(a.inverse * k + bins, minlength=a.panes.size * k).reshape(-1, k)
        for p, c in zip(a.panes.tolist(), per_pane, strict=True):
            current = self._counts.get(p)
            self._counts[p] = c.astype(np.int64) if current is None else current + c

    def window_counts(self, window: ClosedWindow) -> np.ndarray:
        """Bin counts of a window (sum of its panes)."""
        total = np.zeros(self.binning.n_bins, dtype=np.int64)
        for p in window.panes:
            if p in self._counts:
                total += self._counts[p]
        return total

    def evaluate_counts(self, counts: np.ndarray, window: ClosedWindow) -> Evaluation | None:
        """The evaluation of a window given its bin counts (also used on merged counts)."""
        n = int(counts.sum())
        if n < self.min_count:
            return None
        psi = psi_from_counts(counts, self.reference_props, self.eps)
        return Evaluation(
            detector="psi",
            feature=self.feature,
            window=window,
            statistic=psi,
            threshold=self.warning,
            p_value=psi_p_value(counts, self.reference_props, self.n_reference),
            effect_size=psi,
            n_window=n,
            n_reference=self.n_reference,
        )

    def _evaluate(self, window: ClosedWindow) -> Evaluation | None:
        return self.evaluate_counts(self.window_counts(window), window)

    def _drop(self, pane: int) -> None:
        self._counts.pop(pane, None)

    def signal(self, evaluation: Evaluation, significant: bool | None = None) -> DriftSignal | None:
        if significant is None:
            significant = evaluation.p_value is not None and evaluation.p_value < self.alpha
        graded = grade(evaluation.statistic, self.warning, self.critical)
        if not significant or graded is None:
            return None
        severity, threshold = graded
        msg = (
            f"{self.feature}: PSI {fmt(evaluation.statistic)} >= {fmt(threshold)} ({severity}) over "
            f"{evaluation.n_window} events vs {evaluation.n_reference} reference values"
        )
        return evaluation.to_signal(severity, threshold, msg)

    def _config(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "window_size": self.spec.size,
            "window_seconds": self.spec.seconds,
            "step": self.spec.step,
            "warning": self.warning,
            "critical": self.critical,
            "alpha": self.alpha,
            "eps": self.eps,
            "n_bins": self.n_bins,
            "allowed_lateness": self.spec.allowed_lateness,
            "min_count": self.min_count,
        }
