"""Change detection with ADWIN (river): on a feature or the score, and on the 0/1 error stream.

`AdwinDetector` feeds every finite value to a `river.drift.ADWIN` (``delta`` = 0.002 by default)
- as its rank in the reference sample when there is one (see the class: raw heavy-tailed values
make ADWIN cut without drift). When ADWIN cuts its adaptive window, river restarts the window from
the next value; the signal compares the mean of the part ADWIN dropped (before the change) with
the mean of the ``settle`` values (default 500) that follow the cut, and is emitted once they have
arrived. (ADWIN's own kept part is a poor "after": it cuts at bucket boundaries, so right at the
cut it still holds many older values - the change measured there was a third of the real one.)
The statistic is ``|mean_after - mean_before| / reference std`` (of the values fed; the raw
change when no reference std is known), graded "warning" from 0.1 and "critical" from 0.5 (a cut
smaller than ``warning`` is not reported). The signal's window runs from the first event of
ADWIN's window before the cut to the last of the ``settle`` values.

`ErrorRateDetector` runs ADWIN on ``1 = wrong prediction, 0 = right`` once labels arrive (concept
drift); it reports increases of the error rate only: "warning" from +0.02, "critical" from +0.05
(absolute), measured over the 1000 labelled events after the cut. Its feature is ``"__error__"``.

Cost: river's ADWIN window is Rust; we call it directly (``ADWIN._helper.update``, 0.15 us per
value) rather than through ``ADWIN.update``'s Python wrapper (0.45-0.7 us), and do what the wrapper
does after a drift (start a fresh window). With the rank transform and our bookkeeping,
`AdwinDetector.update` costs **0.33 us per value** on the CI box (``clock=32``; printed by
``benchmarks/detector_throughput.py``): 0.33 ms per 1000-event batch
per stream. `detectors.monitor.ModelMonitor` runs it on the score (and the errors) by default and
on every numeric feature only on request.

Checkpoints: ``state()`` is a JSON-able dict; ADWIN's own state (its buckets) is river's binary
serialisation of the Rust struct, base64-encoded, tagged with the river version. Restoring under
a different river version starts a fresh ADWIN window (logged) instead of failing.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> det = AdwinDetector("amount", reference_std=1.0)  # raw values, change in units of 1.0
>>> det.update(rng.normal(0.0, 1.0, 3000), ts=np.arange(3000.0))
[]
>>> signals = det.update(rng.normal(2.0, 1.0, 3000), np.arange(3000.0, 6000.0))
>>> [(s.severity, round(s.statistic, 1)) for s in signals]
[('critical', 2.0)]
"""

from __future__ import annotations

import base64
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import river
from river.drift import ADWIN

from detectors.base import grade
from detectors.reference import Reference, as_float
from detectors.signals import ERROR_FEATURE, DetectorName, DriftSignal, WindowStat, fmt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cut:
    """One settled ADWIN detection.

    ``start_*``: the first event of ADWIN's window before the cut; ``cut_*``: the event at which
    ADWIN cut; ``end_*``: the event at which the change was measured, ``settle`` values later
    (``*_offset``: their Kafka offsets, when the caller passes them).
    ``mean_before``: the part ADWIN dropped; ``mean_after``: the ``n_after`` values after the cut.
    """

    start_index: int
    start_ts: float
    cut_index: int
    cut_ts: float
    end_index: int
    end_ts: float
    n_before: int
    n_after: int
    mean_before: float
    mean_after: float
    start_offset: int | None = None
    end_offset: int | None = None


class _Adwin:
    """river ADWIN plus the bookkeeping to describe each cut (index, time, means)."""

    def __init__(self, delta: float, clock: int, grace_period: int, settle: int) -> None:
        if settle < 1:
            raise ValueError(f"settle must be at least 1 value, got {settle}")
        self.delta, self.clock, self.grace_period, self.settle = delta, clock, grace_period, settle
        self.adwin = ADWIN(delta=delta, clock=clock, grace_period=grace_period)
        self.start_index: int | None = None  # first event of ADWIN's current window
        self.start_ts = math.nan
        self.start_offset: int | None = None
        self.width, self.total = 0, 0.0  # the window's size and sum, as we fed it
        self.pending: dict[str, Any] | None = None  # a cut waiting for `settle` values after it

    def feed(
        self, x: np.ndarray, index: np.ndarray, ts: np.ndarray, offsets: np.ndarray | None = None
    ) -> list[Cut]:
        """Feed finite values `x` (with their event indices, times and offsets); return the settled cuts."""

        def off(i: int) -> int | None:
            return None if offsets is None else int(offsets[i])

        adwin = self.adwin
        if adwin.drift_detected:  # (a state saved by river's own update) the next update resets
            adwin._reset()
            self.width, self.total = 0, 0.0
        cuts: list[Cut] = []
        # river's ADWIN.update is a Python wrapper around this Rust window (0.45 vs 0.15 us per value);
        # calling it directly, we do what the wrapper does after a drift: start a fresh window.
        helper = adwin._helper
        pos = 0
        while pos < x.size:
            if self.start_index is None or self.width == 0:
                self.start_index, self.start_ts = int(index[pos]), float(ts[pos])
                self.start_offset = off(pos)
            limit = x.size - pos
            if self.pending is not None:
                limit = min(limit, self.settle - self.width)
            seg = x[pos : pos + limit]
            # Our own running sum of the window, added value by value from its start, so that the
            # means do not depend on how the stream was cut into batches (or checkpointed).
            cum = np.cumsum(np.concatenate(([self.total], seg)))
            cut = -1
            for j, v in enumerate(seg.tolist()):
                if helper.update(v):
                    cut = j
                    break
            if cut < 0:
                self.width += seg.size
                self.total = float(cum[-1])
                pos += seg.size
                if self.pending is not None and self.width >= self.settle:
                    cuts.append(self._settle(int(index[pos - 1]), float(ts[pos - 1]), off(pos - 1)))
                continue
            i = pos + cut
            n0, t0 = self.width + cut + 1, float(cum[cut + 1])
            if self.pending is not None:  # cut again before settling: settle on what came so far
                self.width, self.total = n0, t0
                cuts.append(self._settle(int(index[i]), float(ts[i]), off(i)))
            n1, t1 = int(helper.get_width()), float(helper.get_total())
            dropped = n0 - n1
            self.pending = {
                "start_index": self.start_index,
                "start_ts": self.start_ts,
                "start_offset": self.start_offset,
                "cut_index": int(index[i]) + 1,
                "cut_ts": float(ts[i]),
                "n_before": dropped,
                "mean_before": (t0 - t1) / dropped if dropped else t0 / n0,
            }
            adwin._reset()
            helper = adwin._helper
            self.width, self.total, self.start_index = 0, 0.0, None
            pos = i + 1
        return cuts

    def _settle(self, end_index: int, end_ts: float, end_offset: int | None = None) -> Cut:
        p = self.pending
        assert p is not None
        self.pending = None
        return Cut(
            start_index=int(p["start_index"]),
            start_ts=float(p["start_ts"]),
            cut_index=int(p["cut_index"]),
            cut_ts=float(p["cut_ts"]),
            end_index=end_index + 1,
            end_ts=end_ts,
            n_before=int(p["n_before"]),
            n_after=self.width,
            mean_before=float(p["mean_before"]),
            mean_after=self.total / self.width if self.width else math.nan,
            start_offset=p.get("start_offset"),
            end_offset=end_offset,
        )

    def state(self) -> dict[str, Any]:
        helper = self.adwin._helper  # river keeps the Rust window here; its __getstate__ is not pickle
        return {
            "river": river.__version__,
            "adwin": base64.b64encode(helper.__getstate__()).decode("ascii"),
            "drift_detected": bool(self.adwin.drift_detected),
            "start_index": self.start_index,
            "start_ts": None if math.isnan(self.start_ts) else self.start_ts,
            "start_offset": self.start_offset,
            "width": self.width,
            "total": self.total,
            "pending": self.pending,
        }

    def load(self, state: dict[str, Any]) -> None:
        if state.get("river") != river.__version__:
            log.warning(
                "ADWIN state saved with river %s, running %s: starting a fresh window",
                state.get("river"),
                river.__version__,
            )
            return
        self.adwin._helper.__setstate__(base64.b64decode(state["adwin"]))
        self.adwin._drift_detected = bool(state["drift_detected"])
        self.start_index = state["start_index"]
        self.start_ts = math.nan if state["start_ts"] is None else float(state["start_ts"])
        self.start_offset = state.get("start_offset")
        self.width, self.total = int(state["width"]), float(state["total"])
        self.pending = state["pending"]


class _AdwinBase:
    detector: ClassVar[DetectorName]

    def __init__(
        self,
        feature: str,
        delta: float,
        warning: float,
        critical: float,
        clock: int,
        grace_period: int,
        settle: int,
        n_reference: int,
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"ADWIN delta must be in (0, 1), got {delta}")
        self.feature = feature
        self.delta = delta
        self.warning = warning
        self.critical = critical
        self.clock = clock
        self.grace_period = grace_period
        self.settle = settle
        self.n_reference = n_reference
        self.n_seen = 0
        self._core = _Adwin(delta, clock, grace_period, settle)
        self.windows: list[WindowStat] = []

    @property
    def width(self) -> int:
        """Values in ADWIN's current window."""
        return self._core.width

    @property
    def estimate(self) -> float:
        """Mean of ADWIN's current window (NaN while it is empty); ranks if fed ranks."""
        return self._core.total / self._core.width if self._core.width else math.nan

    def _feed(self, values: np.ndarray, ts: np.ndarray, offsets: np.ndarray | None = None) -> list[Cut]:
        x = as_float(np.asarray(values))
        ts = np.asarray(ts, dtype=np.float64)
        if x.shape != ts.shape:
            raise ValueError(f"{self.feature}: {len(x)} values but {len(ts)} timestamps")
        offs = None if offsets is None else np.asarray(offsets, dtype=np.int64)
        if offs is not None and offs.shape != ts.shape:
            raise ValueError(f"{self.feature}: {len(offs)} offsets but {len(ts)} timestamps")
        index = np.arange(self.n_seen, self.n_seen + x.size, dtype=np.int64)
        self.n_seen += x.size
        ok = np.isfinite(x)
        if not ok.all():
            x, index, ts = x[ok], index[ok], ts[ok]
            offs = None if offs is None else offs[ok]
        return self._core.feed(x, index, ts, offs)

    def _signal(
        self, cut: Cut, statistic: float, effect: float, message: str, partition: int | None = None
    ) -> DriftSignal | None:
        graded = grade(statistic, self.warning, self.critical)
        if graded is None:
            return None
        severity, threshold = graded
        offsets: dict[int, tuple[int, int]] = {}
        if partition is not None and cut.start_offset is not None and cut.end_offset is not None:
            offsets[partition] = (cut.start_offset, cut.end_offset)
        return DriftSignal(
            detector=self.detector,
            feature=self.feature,
            statistic=statistic,
            threshold=threshold,
            p_value=None,
            effect_size=effect,
            severity=severity,
            window_start_ts=cut.start_ts,
            window_end_ts=cut.end_ts,
            window_start_index=cut.start_index,
            window_end_index=cut.end_index,
            n_window=cut.n_before + cut.n_after,
            n_reference=self.n_reference,
            message=f"{message} ({severity})",
            partition=partition,
            window_offsets=offsets,
        )

    def _config(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "delta": self.delta,
            "warning": self.warning,
            "critical": self.critical,
            "clock": self.clock,
            "grace_period": self.grace_period,
            "settle": self.settle,
        }

    def state(self) -> dict[str, Any]:
        """JSON-able state (settings, event counter, ADWIN window)."""
        return {
            "detector": self.detector,
            "config": self._config(),
            "n_seen": self.n_seen,
            "adwin": self._core.state(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("detector") != self.detector:
            raise ValueError(f"not a {self.detector} state: {state.get('detector')!r}")
        self.n_seen = int(state["n_seen"])
        self._core.load(state["adwin"])


def mid_ranks(reference_sorted: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Position of each value in the reference, in [0, 1]: the mid-rank ``(F(x-) + F(x)) / 2``.

    >>> mid_ranks(np.array([1.0, 2.0, 2.0, 3.0]), np.array([0.0, 2.0, 5.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    lo = np.searchsorted(reference_sorted, x, side="left")
    hi = np.searchsorted(reference_sorted, x, side="right")
    ranks: np.ndarray = (lo + hi) / (2.0 * reference_sorted.size)
    return ranks


class AdwinDetector(_AdwinBase):
    """ADWIN on one numeric stream (a feature or ``"__score__"``).

    With a numeric `reference` (the default in `detectors.monitor`), ADWIN is fed each value's
    position in the reference sample (`mid_ranks`, in [0, 1]) rather than the raw value: ADWIN's
    bound assumes well-behaved values, and on a heavy-tailed feature (a lognormal amount) raw
    values gave 144 false cuts per million events, ranks none (same for normal and 0/1 features:
    none either way). The statistic is then the change of the mean rank divided by the
    reference's own rank std (about ``1/sqrt(12)``): for a normal feature shifted by ``s``
    standard deviations it is about ``0.98 * s``. Without a reference, raw values are fed and
    the change is divided by ``reference_std`` if given.
    """

    detector = "adwin"

    def __init__(
        self,
        feature: str,
        reference: Reference | None = None,
        delta: float = 0.002,
        reference_std: float | None = None,
        warning: float = 0.1,
        critical: float = 0.5,
        clock: int = 32,
        grace_period: int = 10,
        settle: int = 500,
    ) -> None:
        ranked = reference is not None and reference.kind == "numeric" and len(reference.sample) >= 2
        n_ref = len(reference.sample) if ranked and reference is not None else 0
        super().__init__(feature, delta, warning, critical, clock, grace_period, settle, n_ref)
        self.reference = reference if ranked else None
        self._sorted = reference.sorted_sample() if ranked and reference is not None else None
        if self._sorted is not None:
            reference_std = float(np.std(mid_ranks(self._sorted, self._sorted), ddof=1))
        self.reference_std = reference_std if reference_std and reference_std > 0 else None

    def update(
        self,
        values: np.ndarray,
        ts: np.ndarray,
        offsets: np.ndarray | None = None,
        partition: int | None = None,
    ) -> list[DriftSignal]:
        """Feed a batch (NaN/None skipped); return a signal per ADWIN cut of at least ``warning``.

        With the values' Kafka ``offsets`` (increasing) and their ``partition``, each signal carries
        the partition and the first and last offset of its window (``window_offsets``).
        """
        x = as_float(np.asarray(values))
        if self._sorted is not None:
            x = np.where(np.isnan(x), np.nan, mid_ranks(self._sorted, x))
        out = []
        for cut in self._feed(x, ts, offsets):
            change = cut.mean_after - cut.mean_before
            stat = abs(change) / self.reference_std if self.reference_std else abs(change)
            what = "mean reference rank" if self._sorted is not None else "mean"
            unit = " reference std" if self.reference_std else ""
            msg = (
                f"{self.feature}: {what} moved from {fmt(cut.mean_before)} to {fmt(cut.mean_after)} "
                f"at event {cut.cut_index} ({fmt(stat)}{unit}, ADWIN delta {self.delta})"
            )
            sig = self._signal(cut, stat, change, msg, partition)
            if sig is not None:
                out.append(sig)
        self.windows = [s.stat() for s in out]
        return out

    def _config(self) -> dict[str, Any]:
        cfg = super()._config()
        return {**cfg, "reference_std": None if self._sorted is not None else self.reference_std}

    def state(self, include_reference: bool = True) -> dict[str, Any]:
        """JSON-able state (settings, event counter, ADWIN window; the reference unless told not to)."""
        ref = self.reference.model_dump() if include_reference and self.reference is not None else None
        return {**super().state(), "reference": ref, "ranked": self.reference is not None}

    @classmethod
    def from_state(cls, state: dict[str, Any], reference: Reference | None = None) -> AdwinDetector:
        """Rebuild from `state` (``reference`` is required if it was saved without one)."""
        if state.get("ranked"):
            if reference is None and state.get("reference") is None:
                raise ValueError("adwin state saved without its reference: pass reference=")
            reference = reference or Reference.model_validate(state["reference"])
        else:
            reference = None
        det = cls(reference=reference, **state["config"])
        det._restore(state)
        return det


class ErrorRateDetector(_AdwinBase):
    """ADWIN on the 0/1 error stream (1 = wrong prediction): concept drift once labels arrive."""

    detector = "error_rate"

    def __init__(
        self,
        delta: float = 0.002,
        warning: float = 0.02,
        critical: float = 0.05,
        clock: int = 32,
        grace_period: int = 30,
        settle: int = 1000,
        reference_error_rate: float | None = None,
        feature: str = ERROR_FEATURE,
    ) -> None:
        super().__init__(feature, delta, warning, critical, clock, grace_period, settle, 0)
        self.reference_error_rate = reference_error_rate

    def update(self, errors: np.ndarray, ts: np.ndarray) -> list[DriftSignal]:
        """Feed 0/1 errors (NaN = no label, skipped); a signal per ADWIN cut raising the error rate.

        With ``reference_error_rate`` (the model's holdout error rate) the level is checked too:
        once ADWIN's window holds at least ``settle`` outcomes and its error rate exceeds the
        reference by ``critical``, a critical signal is raised even if the cuts that got there
        were each small (a change ADWIN saw early, as a warning, then absorbed).
        """
        out = []
        for cut in self._feed(errors, ts):
            increase = cut.mean_after - cut.mean_before
            msg = (
                f"{self.feature}: error rate rose from {fmt(cut.mean_before)} to {fmt(cut.mean_after)} "
                f"at labelled event {cut.cut_index}"
            )
            sig = self._signal(cut, increase, increase, msg)
            if sig is not None:
                out.append(sig)
        level = self._level(np.asarray(ts, dtype=np.float64))
        if level is not None and not any(s.severity == "critical" for s in out):
            out.append(level)
        self.windows = [s.stat() for s in out]
        return out

    def _level(self, ts: np.ndarray) -> DriftSignal | None:
        ref, width = self.reference_error_rate, self.width
        if ref is None or width < max(self.settle, 1) or ts.size == 0:
            return None
        excess = self.estimate - ref
        if excess < self.critical:
            return None
        end = self.n_seen
        window = Cut(
            start_index=end - width,
            start_ts=float(ts.min()),
            cut_index=end - width,
            cut_ts=float(ts.min()),
            end_index=end,
            end_ts=float(ts.max()),
            n_before=0,
            n_after=width,
            mean_before=ref,
            mean_after=self.estimate,
        )
        msg = (
            f"{self.feature}: error rate {fmt(self.estimate)} over the last {width} labelled events, "
            f"{fmt(excess)} above the reference {fmt(ref)}"
        )
        return self._signal(window, excess, excess, msg)

    def _config(self) -> dict[str, Any]:
        cfg = super()._config()
        return {**cfg, "reference_error_rate": self.reference_error_rate}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ErrorRateDetector:
        det = cls(**state["config"])
        det._restore(state)
        return det
