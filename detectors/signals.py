"""What detectors report: a `DriftSignal` per drifted window, a `WindowStat` per evaluated window.

A detector's ``update(values, ts)`` returns only *drift* (severity "warning" or "critical"); every
window it evaluated, drifted or not, is also left in its ``windows`` attribute as a `WindowStat`
(cleared at each call) so that `detectors.alerts.AlertPolicy` can see a statistic fall back
below its threshold and re-arm (hysteresis).

Times are event time in float epoch seconds; indices count the events the detector was fed
(``window_start_index`` inclusive, ``window_end_index`` exclusive). Where the events came from Kafka,
``window_offsets`` gives, per partition, the first and last offset of the window's events (a merged
window spans many partitions; a per-partition detector such as ADWIN also sets ``partition``).

>>> s = DriftSignal(detector="psi", feature="amount", statistic=0.31, threshold=0.2, p_value=None,
...                 effect_size=0.31, severity="critical", window_start_ts=0.0, window_end_ts=60.0,
...                 window_start_index=0, window_end_index=5000, n_window=5000, n_reference=5000,
...                 message="amount: PSI 0.310 >= 0.2 over 5000 events")
>>> s.key, s.stat().statistic
(('amount', 'psi'), 0.31)
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DetectorName = Literal["adwin", "psi", "ks", "missing_rate", "error_rate", "cusum"]
Severity = Literal["warning", "critical"]

SCORE_FEATURE = "__score__"
"""Feature name of the model score stream."""
ERROR_FEATURE = "__error__"
"""Feature name of the 0/1 error stream (prediction != label)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowStat(_Model):
    """One evaluated window of one detector, drifted or not (for re-arming alerts)."""

    detector: DetectorName
    feature: str
    statistic: float
    threshold: float
    window_end_ts: float
    window_end_index: int
    n_window: int = Field(ge=0)
    p_value: float | None = None
    window_start_ts: float | None = None
    """Where the window began (None in statistics stored before it was recorded); a merged window
    that waited for its minimum of events spans several event-time windows."""


class DriftSignal(_Model):
    """Evidence of drift in one window of one feature, from one detector."""

    detector: DetectorName
    feature: str
    statistic: float
    threshold: float
    p_value: float | None = None
    effect_size: float | None = None
    severity: Severity
    window_start_ts: float
    window_end_ts: float
    window_start_index: int
    window_end_index: int
    n_window: int = Field(ge=0)
    n_reference: int = Field(ge=0)
    message: str
    partition: int | None = None
    """The partition of a per-partition detector's stream (ADWIN); None for merged windows."""
    window_offsets: dict[int, tuple[int, int]] = Field(default_factory=dict)
    """Per partition, the first and last Kafka offset of the window's events (empty: not known)."""

    @property
    def key(self) -> tuple[str, str]:
        """(feature, detector)."""
        return self.feature, self.detector

    def stat(self) -> WindowStat:
        """The `WindowStat` of this signal's window."""
        return WindowStat(
            detector=self.detector,
            feature=self.feature,
            statistic=self.statistic,
            threshold=self.threshold,
            window_end_ts=self.window_end_ts,
            window_end_index=self.window_end_index,
            n_window=self.n_window,
            p_value=self.p_value,
            window_start_ts=self.window_start_ts,
        )


def fmt(x: float | None) -> str:
    """Short number for messages: 3 significant digits, scientific notation for tiny p-values.

    >>> fmt(0.123456), fmt(2.5e-12), fmt(1234.5), fmt(None)
    ('0.123', '2.5e-12', '1.23e+03', 'n/a')
    """
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:.3g}"
