"""Drift monitoring inside the worker: each scored batch feeds the production version's detectors.

One `detectors.ModelMonitor` per production model version, built from the version's reference
distributions (so a promotion starts fresh detectors on the new references: the switch itself
raises no alert). Signals go through an `AlertPolicy` (cooldown, hysteresis, one alert per
feature and window) and the alerts are produced by the worker with the batch's other outputs,
before its offsets are committed.

This is the per-worker (local) version: windows count the events this worker sees. Merging
windows across workers (`detectors.window_store`) and checkpointing detector state are not wired
in yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from detectors.alerts import AlertPolicy, DriftAlert
from detectors.monitor import ModelMonitor, MonitorConfig
from detectors.reference import Reference
from inference.encoding import numeric_values
from inference.metadata import Distribution, ModelVersion

OTHER_CATEGORY = "__other__"  # training's catch-all share of rare categories


def to_reference(d: Distribution) -> Reference:
    """inference's reference distribution -> the detectors' input model."""
    return Reference(
        kind=d.kind,
        sample=list(d.sample),
        frequencies=dict(d.frequencies),
        missing_rate=d.missing_rate,
        count=d.count,
        other_category=OTHER_CATEGORY if d.kind == "categorical" else None,
    )


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.alerts = Counter(
            "driftline_drift_alerts",
            "Drift alerts by severity and detector",
            ["severity", "detector"],
            registry=registry,
        )
        self.statistic = Gauge(
            "driftline_drift_statistic",
            "Latest closed-window statistic per detector and feature",
            ["model", "version", "detector", "feature"],
            registry=registry,
        )


class DriftStage:
    def __init__(
        self,
        registry: CollectorRegistry,
        config: MonitorConfig | None = None,
        policy: AlertPolicy | None = None,
        monitored: set[str] | None = None,
    ) -> None:
        self.config = config or MonitorConfig(window_size=5000)
        # Which model inputs get detectors (None: all with a reference). The worker monitors the
        # raw event features and the score: windowed aggregates such as a 24 h count grow while
        # an entity's history fills up, so against a training-time reference they "drift" during
        # every warm-up; they need warm-up-aware references first.
        self.monitored = monitored
        self.policy = policy or AlertPolicy()
        self.metrics = DriftMetrics(registry)
        self._monitors: dict[str, ModelMonitor] = {}

    def monitor(self, meta: ModelVersion) -> ModelMonitor | None:
        if meta.ref not in self._monitors:
            if not meta.reference:
                return None  # a model registered without reference data: nothing to compare with
            references = {
                name: to_reference(d)
                for name, d in meta.reference.items()
                if self.monitored is None or name in self.monitored
            }
            score = to_reference(meta.score_reference) if meta.score_reference else None
            self._monitors = {meta.ref: ModelMonitor(references, score_reference=score, config=self.config)}
        return self._monitors[meta.ref]

    def observe(
        self,
        meta: ModelVersion,
        columns: Mapping[str, Sequence[Any]],
        rows: np.ndarray,
        scores: np.ndarray,
        ts: np.ndarray,
    ) -> list[DriftAlert]:
        """Feed the rows the production version served; return the alerts to publish."""
        monitor = self.monitor(meta)
        if monitor is None or len(rows) == 0:
            return []
        picked = rows.tolist()
        batch = {}
        for name, feature in monitor.features.items():
            if name not in columns:
                continue
            col = columns[name]
            values = [col[i] for i in picked]
            if feature.reference.kind == "numeric":
                batch[name] = numeric_values(values, len(values))  # None/strings -> NaN (missing)
            else:
                batch[name] = np.array(values, dtype=object)
        signals = monitor.update(batch, scores, ts)
        for w in monitor.windows:
            self.metrics.statistic.labels(meta.name, str(meta.version), w.detector, w.feature).set(
                w.statistic
            )
        alerts = self.policy.decide(signals, model=meta.name, version=meta.version, windows=monitor.windows)
        for alert in alerts:
            self.metrics.alerts.labels(alert.severity, alert.detector).inc()
        return alerts
