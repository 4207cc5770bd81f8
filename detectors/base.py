"""The shape every windowed detector shares: panes in, `Evaluation` per closed window, signals out.

A windowed detector (`detectors.psi.PSIWindow`, `detectors.ks.KSWindow`,
`detectors.missing.MissingRate`) cuts its stream with a `detectors.windowing.Windower`, keeps a
small accumulator per pane, and evaluates each closed window once: `evaluate` returns one
`Evaluation` per window (drifted or not) and `signal` turns an evaluation into a `DriftSignal` when
it is significant and large enough. ``update = signals(evaluate(...))``; a caller that corrects for
multiple testing across features (`detectors.monitor.ModelMonitor`) calls `evaluate` and passes
its own ``significant`` flags to `signals`.

State (`state` / `from_state`) is a JSON-able dict: the detector's settings, the windower and the
pane accumulators, plus (by default) the reference, so that a restored detector continues exactly
where the original stopped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from detectors.reference import Reference
from detectors.signals import DetectorName, DriftSignal, Severity, WindowStat
from detectors.windowing import Assignment, ClosedWindow, Windower, WindowSpec


@dataclass(frozen=True)
class Evaluation:
    """The statistic of one closed window (drifted or not)."""

    detector: DetectorName
    feature: str
    window: ClosedWindow
    statistic: float
    threshold: float
    p_value: float | None
    effect_size: float | None
    n_window: int
    n_reference: int

    def stat(self) -> WindowStat:
        return WindowStat(
            detector=self.detector,
            feature=self.feature,
            statistic=self.statistic,
            threshold=self.threshold,
            window_end_ts=self.window.end_ts,
            window_end_index=self.window.end_index,
            n_window=self.n_window,
            p_value=self.p_value,
            window_start_ts=self.window.start_ts,
        )

    def to_signal(self, severity: Severity, threshold: float, message: str) -> DriftSignal:
        w = self.window
        return DriftSignal(
            detector=self.detector,
            feature=self.feature,
            statistic=self.statistic,
            threshold=threshold,
            p_value=self.p_value,
            effect_size=self.effect_size,
            severity=severity,
            window_start_ts=w.start_ts,
            window_end_ts=w.end_ts,
            window_start_index=w.start_index,
            window_end_index=w.end_index,
            n_window=self.n_window,
            n_reference=self.n_reference,
            message=message,
        )


def grade(value: float, warning: float, critical: float) -> tuple[Severity, float] | None:
    """("critical", critical) if value >= critical, ("warning", warning) if >= warning, else None.

    >>> grade(0.3, 0.1, 0.2), grade(0.15, 0.1, 0.2), grade(0.05, 0.1, 0.2)
    (('critical', 0.2), ('warning', 0.1), None)
    """
    if value >= critical:
        return "critical", critical
    if value >= warning:
        return "warning", warning
    return None


class CountPanes:
    """Pane accumulators that are count vectors (PSI bins; missing/total), checkpointed as lists."""

    _counts: dict[int, np.ndarray]

    def _panes_state(self) -> dict[str, Any]:
        return {str(p): c.tolist() for p, c in self._counts.items()}

    def _load_panes(self, panes: dict[str, Any]) -> None:
        self._counts = {int(p): np.asarray(c, dtype=np.int64) for p, c in panes.items()}


class WindowedDetector(ABC):
    """Base class: windowing, state plumbing and the evaluate -> signal split."""

    detector: ClassVar[DetectorName]

    def __init__(
        self,
        reference: Reference,
        feature: str,
        window_size: int | None,
        window_seconds: float | None,
        step: float | None,
        allowed_lateness: float,
        min_count: int,
    ) -> None:
        self.reference = reference
        self.feature = feature
        self.spec = WindowSpec.of(window_size, window_seconds, step, allowed_lateness)
        self.windower = Windower(self.spec)
        self.min_count = min_count
        self.windows: list[WindowStat] = []
        """`WindowStat` of every window evaluated by the last call."""

    # -- the stream ------------------------------------------------------------------------------

    def evaluate(self, values: np.ndarray, ts: np.ndarray) -> list[Evaluation]:
        """Feed a batch; return an `Evaluation` of each window it closed (with enough events)."""
        values = np.asarray(values)
        ts = np.asarray(ts, dtype=np.float64)
        if values.shape[:1] != ts.shape:
            raise ValueError(f"{self.feature}: {len(values)} values but {len(ts)} timestamps")
        return self.evaluate_assigned(values, self.windower.assign(ts))

    def evaluate_assigned(self, values: np.ndarray, a: Assignment) -> list[Evaluation]:
        """`evaluate` with the batch already assigned by ``self.windower`` (which detectors fed the
        same timestamps may share, as `detectors.monitor` does: one assignment per batch)."""
        values = np.asarray(values)
        if values.shape[:1] != a.keep.shape:
            raise ValueError(f"{self.feature}: {len(values)} values but {len(a.keep)} timestamps")
        if a.panes.size:
            self._accumulate(values if a.keep.all() else values[a.keep], a)
        out = []
        for w in a.closed:
            ev = self._evaluate(w)
            if ev is not None:
                out.append(ev)
        for p in a.evict:
            self._drop(p)
        self.windows = [ev.stat() for ev in out]
        return out

    def update(self, values: np.ndarray, ts: np.ndarray) -> list[DriftSignal]:
        """Feed a batch; return the drift signals of the windows it closed."""
        return self.signals(self.evaluate(values, ts))

    def signals(
        self, evaluations: Sequence[Evaluation], significant: Sequence[bool] | None = None
    ) -> list[DriftSignal]:
        """Signals of the drifted `evaluations` (``significant``: overrides each one's own test)."""
        out = []
        for i, ev in enumerate(evaluations):
            sig = self.signal(ev, None if significant is None else bool(significant[i]))
            if sig is not None:
                out.append(sig)
        return out

    @property
    def n_late(self) -> int:
        """Events dropped as late (time windows) so far."""
        return self.windower.n_late

    # -- per detector ----------------------------------------------------------------------------

    @abstractmethod
    def _accumulate(self, values: np.ndarray, a: Assignment) -> None:
        """Add the kept `values` (aligned with ``a.inverse``) to their panes."""

    @abstractmethod
    def _evaluate(self, window: ClosedWindow) -> Evaluation | None:
        """The window's statistic, or None if it has too few events."""

    @abstractmethod
    def _drop(self, pane: int) -> None:
        """Forget a pane."""

    @abstractmethod
    def signal(self, evaluation: Evaluation, significant: bool | None = None) -> DriftSignal | None:
        """A signal if `evaluation` shows drift (``significant`` None: use the detector's own test)."""

    @abstractmethod
    def _config(self) -> dict[str, Any]:
        """Constructor keyword arguments other than the reference."""

    @abstractmethod
    def _panes_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load_panes(self, panes: dict[str, Any]) -> None: ...

    # -- checkpoint ------------------------------------------------------------------------------

    def state(self, include_reference: bool = True) -> dict[str, Any]:
        """JSON-able state (settings, windows, pane accumulators; the reference unless told not to)."""
        return {
            "detector": self.detector,
            "config": self._config(),
            "reference": self.reference.model_dump() if include_reference else None,
            "windower": self.windower.state(),
            "panes": self._panes_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], reference: Reference | None = None) -> Self:
        """Rebuild from `state` (``reference`` is required if the state was saved without one)."""
        if state.get("detector") != cls.detector:
            raise ValueError(f"not a {cls.detector} state: {state.get('detector')!r}")
        if reference is None:
            if state.get("reference") is None:
                raise ValueError(f"{cls.detector} state saved without its reference: pass reference=")
            reference = Reference.model_validate(state["reference"])
        det = cls(reference, **state["config"])
        det.windower = Windower.from_state(state["windower"])
        det._load_panes(state["panes"])
        return det
