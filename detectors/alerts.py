"""From drift signals to alerts: one drift -> one alert, not a storm.

`AlertPolicy.decide` turns the `DriftSignal` s of a batch into `DriftAlert` s. Per key
``(model, feature, detector)``:

* **cooldown**: after an alert, no new alert for the key for ``cooldown_seconds`` of *event time*
  (measured between the signals' ``window_end_ts``, so a replay decides the same way);
* **hysteresis**: after an alert the key is disarmed until a window's statistic falls below
  ``threshold * hysteresis_ratio`` (the threshold of the alert that disarmed it). Statistics come
  from the signals and from the ``windows`` argument: the `WindowStat` of *every* evaluated window
  (`ModelMonitor.windows`), since a window back to normal emits no signal. Change-point detectors
  (``adwin``, ``error_rate``, ``cusum``) report one signal per change, so they are not subject to hysteresis,
  only to the cooldown;
* **escalation**: a "critical" signal after a "warning" alert alerts once more, even in cooldown.

With ``group_by_feature`` (default) an alert on a feature also covers the other detectors of that
feature: their signals of the same or lower severity within the cooldown are folded into it
(listed in ``corroborated_by`` when they come in the same call) and disarm their own keys, so PSI
and KS seeing the same shift give one alert.

Alert ids are deterministic (model, version, detector, feature and the window's bounds) and the
policy drops ids it already emitted (the last ``max_ids``), so a downstream consumer can dedup on
them too. `state` / `from_state` checkpoint the policy as a JSON-able dict.

>>> sig = DriftSignal(detector="psi", feature="amount", statistic=0.4, threshold=0.2, severity="critical",
...                   window_start_ts=0.0, window_end_ts=60.0, window_start_index=0, window_end_index=5000,
...                   n_window=5000, n_reference=5000, message="amount: PSI 0.4 >= 0.2")
>>> policy = AlertPolicy(cooldown_seconds=600)
>>> [a.feature for a in policy.decide([sig], model="fraud", version=3)]
['amount']
>>> later = sig.model_copy(update={"window_start_ts": 60.0, "window_end_ts": 120.0})
>>> policy.decide([later], model="fraud", version=3)  # cooldown, and still above the threshold
[]
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from detectors.signals import DetectorName, DriftSignal, Severity, WindowStat

CHANGE_POINT_DETECTORS: frozenset[str] = frozenset({"adwin", "error_rate", "cusum"})
_RANK = {"warning": 1, "critical": 2}


def alert_id(
    model: str,
    version: int,
    detector: str,
    feature: str,
    window_start_ts: float,
    window_end_ts: float,
    window_start_index: int,
    window_end_index: int,
) -> str:
    """Deterministic alert id: a hash of what identifies the drifted window.

    >>> a = alert_id("fraud", 3, "psi", "amount", 0.0, 60.0, 0, 5000)
    >>> a == alert_id("fraud", 3, "psi", "amount", 0, 60, 0, 5000), len(a)
    (True, 32)
    """
    raw = "\x1f".join(
        [
            model,
            str(version),
            detector,
            feature,
            repr(float(window_start_ts)),
            repr(float(window_end_ts)),
            str(window_start_index),
            str(window_end_index),
        ]
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class DriftAlert(BaseModel):
    """A drift alert, as published to ``<prefix>.alerts``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    ts: datetime = Field(description="when the policy raised it (UTC, processing time)")
    model: str
    version: int
    detector: DetectorName
    feature: str
    statistic: float
    threshold: float
    p_value: float | None = None
    effect_size: float | None = None
    window_start_ts: float
    window_end_ts: float
    window_start_index: int
    window_end_index: int
    n_window: int
    n_reference: int
    severity: Severity
    message: str
    corroborated_by: list[DetectorName] = Field(default_factory=list)
    partition: int | None = None
    """The partition a per-partition detector (ADWIN) ran on; None for windows merged across partitions."""
    window_offsets: dict[int, tuple[int, int]] = Field(default_factory=dict)
    """Per partition, the first and last Kafka offset of the window's events (empty: not known)."""

    @classmethod
    def from_signal(cls, s: DriftSignal, model: str, version: int, ts: datetime | None = None) -> DriftAlert:
        return cls(
            id=alert_id(
                model,
                version,
                s.detector,
                s.feature,
                s.window_start_ts,
                s.window_end_ts,
                s.window_start_index,
                s.window_end_index,
            ),
            ts=ts or datetime.now(UTC),
            model=model,
            version=version,
            detector=s.detector,
            feature=s.feature,
            statistic=s.statistic,
            threshold=s.threshold,
            p_value=s.p_value,
            effect_size=s.effect_size,
            window_start_ts=s.window_start_ts,
            window_end_ts=s.window_end_ts,
            window_start_index=s.window_start_index,
            window_end_index=s.window_end_index,
            n_window=s.n_window,
            n_reference=s.n_reference,
            severity=s.severity,
            message=s.message,
            partition=s.partition,
            window_offsets=dict(s.window_offsets),
        )


@dataclass
class _KeyState:
    last_ts: float
    severity: Severity
    threshold: float
    armed: bool


@dataclass
class _FeatureState:
    last_ts: float
    severity: Severity
    detector: str


class AlertPolicy:
    """Cooldown, hysteresis, per-feature grouping and dedup between detector signals and alerts."""

    def __init__(
        self,
        cooldown_seconds: float = 3600.0,
        hysteresis_ratio: float = 0.8,
        group_by_feature: bool = True,
        min_severity: Severity = "warning",
        max_ids: int = 10_000,
    ) -> None:
        if not 0.0 < hysteresis_ratio <= 1.0:
            raise ValueError(f"hysteresis_ratio must be in (0, 1], got {hysteresis_ratio}")
        self.cooldown_seconds = cooldown_seconds
        self.hysteresis_ratio = hysteresis_ratio
        self.group_by_feature = group_by_feature
        self.min_severity = min_severity
        self.max_ids = max_ids
        self._keys: dict[tuple[str, str, str], _KeyState] = {}
        self._features: dict[tuple[str, str], _FeatureState] = {}
        self._ids: deque[str] = deque()
        self._id_set: set[str] = set()

    def decide(
        self,
        signals: Sequence[DriftSignal],
        *,
        model: str,
        version: int,
        windows: Iterable[WindowStat] = (),
        now: datetime | None = None,
    ) -> list[DriftAlert]:
        """The alerts to publish for `signals` (``windows``: every evaluated window, for re-arming)."""
        items: list[tuple[float, int, int, int, WindowStat | DriftSignal]] = []
        for w in windows:
            items.append((w.window_end_ts, w.window_end_index, 0, 0, w))
        for s in signals:
            items.append((s.window_end_ts, s.window_end_index, 1, -_RANK[s.severity], s))
        items.sort(key=lambda it: (it[0], it[1], it[2], it[3], it[4].feature, it[4].detector))
        alerts: list[DriftAlert] = []
        emitted: dict[tuple[str, float], int] = {}  # (feature, window end) -> position in alerts
        for *_, item in items:
            if isinstance(item, WindowStat):
                self._rearm(model, item.feature, item.detector, item.statistic)
                continue
            alert = self._decide_one(item, model, version, now, alerts, emitted)
            if alert is not None:
                emitted[(item.feature, item.window_end_ts)] = len(alerts)
                alerts.append(alert)
        return alerts

    def _rearm(self, model: str, feature: str, detector: str, statistic: float) -> None:
        st = self._keys.get((model, feature, detector))
        if st is not None and not st.armed and statistic < st.threshold * self.hysteresis_ratio:
            st.armed = True

    def _decide_one(
        self,
        s: DriftSignal,
        model: str,
        version: int,
        now: datetime | None,
        alerts: list[DriftAlert],
        emitted: dict[tuple[str, float], int],
    ) -> DriftAlert | None:
        if _RANK[s.severity] < _RANK[self.min_severity]:
            return None
        self._rearm(model, s.feature, s.detector, s.statistic)
        key = (model, s.feature, s.detector)
        alert = DriftAlert.from_signal(s, model, version, now)
        if alert.id in self._id_set:
            return None
        st = self._keys.get(key)
        if st is not None:
            cooling = s.window_end_ts - st.last_ts < self.cooldown_seconds
            escalates = _RANK[s.severity] > _RANK[st.severity]
            if not escalates and (cooling or not st.armed):
                return None
        fst = self._features.get((model, s.feature))
        if (
            self.group_by_feature
            and fst is not None
            and fst.detector != s.detector
            and s.window_end_ts - fst.last_ts < self.cooldown_seconds
            and _RANK[s.severity] <= _RANK[fst.severity]
        ):
            # Covered by the feature's alert: disarm this key as if it had alerted.
            self._remember(key, s)
            pos = emitted.get((s.feature, s.window_end_ts))
            if pos is not None:
                prev = alerts[pos]
                alerts[pos] = prev.model_copy(update={"corroborated_by": [*prev.corroborated_by, s.detector]})
            return None
        self._remember(key, s)
        self._features[(model, s.feature)] = _FeatureState(s.window_end_ts, s.severity, s.detector)
        self._ids.append(alert.id)
        self._id_set.add(alert.id)
        while len(self._ids) > self.max_ids:
            self._id_set.discard(self._ids.popleft())
        return alert

    def _remember(self, key: tuple[str, str, str], s: DriftSignal) -> None:
        self._keys[key] = _KeyState(
            last_ts=s.window_end_ts,
            severity=s.severity,
            threshold=s.threshold,
            armed=s.detector in CHANGE_POINT_DETECTORS,
        )

    # -- checkpoint ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-able state: settings, per-key and per-feature memory, recent alert ids."""
        return {
            "config": {
                "cooldown_seconds": self.cooldown_seconds,
                "hysteresis_ratio": self.hysteresis_ratio,
                "group_by_feature": self.group_by_feature,
                "min_severity": self.min_severity,
                "max_ids": self.max_ids,
            },
            "keys": [[*k, st.last_ts, st.severity, st.threshold, st.armed] for k, st in self._keys.items()],
            "features": [[*k, st.last_ts, st.severity, st.detector] for k, st in self._features.items()],
            "ids": list(self._ids),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AlertPolicy:
        policy = cls(**state["config"])
        for model, feature, detector, last_ts, severity, threshold, armed in state["keys"]:
            policy._keys[(model, feature, detector)] = _KeyState(
                float(last_ts), severity, float(threshold), bool(armed)
            )
        for model, feature, last_ts, severity, detector in state["features"]:
            policy._features[(model, feature)] = _FeatureState(float(last_ts), severity, detector)
        policy._ids = deque(state["ids"])
        policy._id_set = set(policy._ids)
        return policy
