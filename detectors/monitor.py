"""The in-process monitor of one model: every feature and the score, batch by batch.

`FeatureMonitor` runs, on one feature: PSI (`detectors.psi.PSIWindow`), the missing rate
(`detectors.missing.MissingRate`), and for numeric features the KS test (`detectors.ks.KSWindow`),
a CUSUM bank (`detectors.cusum.CusumDetector`, ``MonitorConfig.cusum``, on by default) and
optionally ADWIN (`detectors.adwin.AdwinDetector`). The CUSUMs share one false-alarm budget,
``cusum_ert_events``, split evenly over the monitor's numeric features, score and errors
(`detectors.cusum.ErrorCusum`, fed by `ModelMonitor.update_errors`). `ModelMonitor` runs one per feature plus
one on the score (``"__score__"``: PSI, KS, ADWIN) and an `detectors.adwin.ErrorRateDetector`
fed by `ModelMonitor.update_errors` once labels arrive. All windows share one `MonitorConfig`, so
every feature's windows close in the same batch; the KS p-values of the windows that close
together are corrected with Benjamini-Hochberg at ``fdr_q`` before the effect-size grading.

This is the local version: windows count the events *this* worker sees. For results that do not
depend on how partitions are spread over workers use `detectors.window_store.WindowStore`.

After each `ModelMonitor.update`, ``monitor.windows`` holds the `WindowStat` of every evaluated
window; pass it to `detectors.alerts.AlertPolicy.decide` so alerts re-arm when drift ends.

Cost, measured on the CI box (2 cores, Python 3.11) for 12 numeric + 2 categorical features +
the score, batches of 1000, 5000-event windows: `ModelMonitor.update` takes 2.5-2.9 ms per batch,
**350-400k events/s**, with ADWIN on the score only (the default); with ADWIN on every numeric
feature too (``adwin_features=True``) 6-7.4 ms per batch, 135-165k events/s. One window
assignment is shared by all detectors; the per-batch work is vectorised (``searchsorted``
binning, ``bincount`` per pane) except the categorical dict lookups and ADWIN's per-value loop;
a KS window costs ~0.2 ms when it closes. These figures predate the CUSUMs, which add about
0.3 us per value and numeric stream (``drift_eval.py``: 3.4 -> 7.6 us per event for 13 streams). Printed by
``benchmarks/detector_throughput.py``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> refs = {"amount": Reference.from_values(rng.normal(size=5000)),
...         "country": Reference.from_values(rng.choice(["DE", "FR"], size=5000))}
>>> mon = ModelMonitor(refs, score_reference=Reference.from_values(rng.random(5000)),
...                    config=MonitorConfig(window_size=1000))
>>> cols = {"amount": rng.normal(size=1000), "country": rng.choice(["DE", "FR"], size=1000).astype(object)}
>>> mon.update(cols, scores=rng.random(1000), ts=np.arange(1000.0))
[]
>>> cols = {"amount": rng.normal(size=1000), "country": np.array(["US"] * 1000, dtype=object)}
>>> sorted({(s.feature, s.detector) for s in mon.update(cols, rng.random(1000), np.arange(1000.0, 2000.0))})
[('country', 'psi')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from detectors.adwin import AdwinDetector, ErrorRateDetector
from detectors.base import Evaluation
from detectors.cusum import CusumDetector, ErrorCusum
from detectors.ks import KSWindow, benjamini_hochberg
from detectors.missing import MissingRate
from detectors.psi import PSIWindow
from detectors.reference import DEFAULT_BINS, EPS, Reference, as_float
from detectors.signals import SCORE_FEATURE, DriftSignal, WindowStat
from detectors.windowing import Assignment, Windower, WindowSpec


class MonitorConfig(BaseModel):
    """Settings shared by every detector of a monitor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_size: int | None = Field(None, ge=1)
    window_seconds: float | None = Field(None, gt=0.0)
    step: float | None = None
    allowed_lateness: float = 0.0
    min_count: int = 100
    psi_warning: float = 0.1
    psi_critical: float = 0.2
    psi_alpha: float = 1e-3
    n_bins: int = DEFAULT_BINS
    eps: float = EPS
    ks: bool = True
    ks_alpha: float = 1e-3
    fdr_q: float | None = 1e-3
    """Benjamini-Hochberg FDR across the KS windows closing together; None: per-test ``ks_alpha``."""
    ks_warning_effect: float = 0.1
    ks_critical_effect: float = 0.25
    missing: bool = True
    missing_alpha: float = 1e-3
    missing_warning: float = 0.02
    missing_critical: float = 0.10
    adwin_score: bool = True
    adwin_features: bool = False
    adwin_delta: float = 0.002
    adwin_warning: float = 0.1
    adwin_critical: float = 0.5
    error_delta: float = 0.002
    error_warning: float = 0.02
    error_critical: float = 0.05
    cusum: bool = True
    """CUSUM (`detectors.cusum`) on every numeric feature, the score and the errors."""
    cusum_k: tuple[float, ...] = (0.125, 0.375)
    cusum_ert_events: float = 1e8
    """False-alarm budget of all the monitor's CUSUMs together: one per this many events."""
    cusum_warning: float = 0.05
    cusum_critical: float = 0.15
    cusum_rearm: int = 10_000
    cusum_reference_margin: float = 2.0
    """Calibrate as if the stream were this many reference standard errors towards an alarm."""
    cusum_error_increases: tuple[float, ...] = (0.03, 0.1)

    def _window(self) -> dict[str, Any]:
        return {
            "window_size": self.window_size,
            "window_seconds": self.window_seconds,
            "step": self.step,
            "allowed_lateness": self.allowed_lateness,
            "min_count": self.min_count,
        }


class FeatureMonitor:
    """The detectors of one feature (or of the score)."""

    def __init__(
        self,
        name: str,
        reference: Reference,
        config: MonitorConfig | None = None,
        missing: bool | None = None,
        adwin: bool | None = None,
        cusum_ert_events: float | None = None,
    ) -> None:
        cfg = config or MonitorConfig()
        self.name, self.reference, self.config = name, reference, cfg
        win = cfg._window()
        self.psi = PSIWindow(
            reference,
            name,
            warning=cfg.psi_warning,
            critical=cfg.psi_critical,
            alpha=cfg.psi_alpha,
            eps=cfg.eps,
            n_bins=cfg.n_bins,
            **win,
        )
        numeric = reference.kind == "numeric" and len(reference.sample) >= 2
        self.ks = (
            KSWindow(
                reference,
                name,
                alpha=cfg.ks_alpha,
                warning_effect=cfg.ks_warning_effect,
                critical_effect=cfg.ks_critical_effect,
                **win,
            )
            if cfg.ks and numeric
            else None
        )
        use_missing = cfg.missing if missing is None else missing
        self.missing = (
            MissingRate(
                reference,
                name,
                alpha=cfg.missing_alpha,
                warning_increase=cfg.missing_warning,
                critical_increase=cfg.missing_critical,
                **win,
            )
            if use_missing
            else None
        )
        use_adwin = cfg.adwin_features if adwin is None else adwin
        self.adwin = (
            AdwinDetector(
                name,
                reference,
                delta=cfg.adwin_delta,
                warning=cfg.adwin_warning,
                critical=cfg.adwin_critical,
            )
            if use_adwin and numeric
            else None
        )
        self.cusum = (
            CusumDetector(
                name,
                reference,
                k=cfg.cusum_k,
                ert_events=cusum_ert_events or cfg.cusum_ert_events,
                warning=cfg.cusum_warning,
                critical=cfg.cusum_critical,
                rearm=cfg.cusum_rearm,
                reference_margin=cfg.cusum_reference_margin,
            )
            if cfg.cusum and numeric
            else None
        )
        self.windows: list[WindowStat] = []
        self.share(self.psi.windower)

    def share(self, windower: Windower) -> None:
        """Make every windowed detector use `windower` (one assignment per batch for all)."""
        self.windower = windower
        for det in (self.psi, self.ks, self.missing):
            if det is not None:
                det.windower = windower

    def evaluate(self, values: np.ndarray, ts: np.ndarray) -> tuple[list[DriftSignal], list[Evaluation]]:
        """Signals of PSI, missing rate and ADWIN, and the KS evaluations (significance left open)."""
        ts = np.asarray(ts, dtype=np.float64)
        if np.shape(values)[:1] != ts.shape:
            raise ValueError(f"{self.name}: {len(values)} values but {len(ts)} timestamps")
        return self.evaluate_assigned(values, self.windower.assign(ts), ts)

    def evaluate_assigned(
        self, values: np.ndarray, a: Assignment, ts: np.ndarray
    ) -> tuple[list[DriftSignal], list[Evaluation]]:
        """`evaluate` with the batch already assigned by the shared windower."""
        values = np.asarray(values)
        if self.reference.kind == "numeric" and values.dtype.kind not in "fiub":
            values = as_float(values)
        psi = self.psi
        signals = psi.signals(psi.evaluate_assigned(values, a))
        windows = list(psi.windows)
        if self.missing is not None:
            signals += self.missing.signals(self.missing.evaluate_assigned(values, a))
            windows += self.missing.windows
        if self.adwin is not None:
            signals += self.adwin.update(values, ts)
            windows += self.adwin.windows
        if self.cusum is not None:
            signals += self.cusum.update(values, ts)
            windows += self.cusum.windows
        ks_evals = self.ks.evaluate_assigned(values, a) if self.ks is not None else []
        windows += [ev.stat() for ev in ks_evals]
        self.windows = windows
        return signals, ks_evals

    def update(self, values: np.ndarray, ts: np.ndarray) -> list[DriftSignal]:
        """All signals of a batch (KS at its own ``ks_alpha``)."""
        signals, ks_evals = self.evaluate(values, ts)
        if self.ks is not None:
            signals += self.ks.signals(ks_evals)
        return signals

    def state(self, include_reference: bool = True) -> dict[str, Any]:
        return {
            "name": self.name,
            "reference": self.reference.model_dump() if include_reference else None,
            "missing": self.missing is not None,
            "adwin": self.adwin is not None,
            "psi": self.psi.state(include_reference=False),
            "ks": self.ks.state(include_reference=False) if self.ks is not None else None,
            "missing_rate": self.missing.state(include_reference=False) if self.missing is not None else None,
            "adwin_state": self.adwin.state(include_reference=False) if self.adwin is not None else None,
            "cusum_state": self.cusum.state(include_reference=False) if self.cusum is not None else None,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], config: MonitorConfig, reference: Reference | None = None
    ) -> FeatureMonitor:
        if reference is None and state.get("reference") is None:
            raise ValueError(f"{state['name']}: state saved without its reference: pass the references")
        ref = reference if reference is not None else Reference.model_validate(state["reference"])
        cusum = state.get("cusum_state")
        ert = cusum["config"]["ert_events"] if cusum is not None else None
        fm = cls(
            state["name"], ref, config, missing=state["missing"], adwin=state["adwin"], cusum_ert_events=ert
        )
        fm.psi = PSIWindow.from_state(state["psi"], ref)
        if fm.ks is not None and state["ks"] is not None:
            fm.ks = KSWindow.from_state(state["ks"], ref)
        if fm.missing is not None and state["missing_rate"] is not None:
            fm.missing = MissingRate.from_state(state["missing_rate"], ref)
        if fm.adwin is not None and state["adwin_state"] is not None:
            fm.adwin = AdwinDetector.from_state(state["adwin_state"], ref)
        if fm.cusum is not None and state.get("cusum_state") is not None:
            fm.cusum = CusumDetector.from_state(state["cusum_state"], ref)
        fm.share(fm.psi.windower)
        return fm


class ModelMonitor:
    """All features of a model plus its score and error stream, in one process."""

    def __init__(
        self,
        features: Mapping[str, Reference],
        score_reference: Reference | None = None,
        config: MonitorConfig | None = None,
        reference_error_rate: float | None = None,
        reference_error_count: int | None = None,
    ) -> None:
        self.config = cfg = config or MonitorConfig()
        # The CUSUM budget is the monitor's: each stream (numeric features, score, errors) gets its share.
        streams = 1 + sum(_numeric(r) for r in features.values()) + (score_reference is not None)
        ert = cfg.cusum_ert_events * streams
        self.features = {
            name: FeatureMonitor(name, ref, cfg, cusum_ert_events=ert) for name, ref in features.items()
        }
        self.score = (
            FeatureMonitor(
                SCORE_FEATURE,
                score_reference,
                cfg,
                missing=False,
                adwin=cfg.adwin_score,
                cusum_ert_events=ert,
            )
            if score_reference is not None
            else None
        )
        self.error_cusum = (
            ErrorCusum(
                reference_error_rate,
                increases=cfg.cusum_error_increases,
                ert_events=ert,
                warning=cfg.error_warning,
                critical=cfg.error_critical,
                rearm=cfg.cusum_rearm,
                reference_count=reference_error_count,
                reference_margin=cfg.cusum_reference_margin,
            )
            if cfg.cusum
            else None
        )
        self.errors = ErrorRateDetector(
            delta=self.config.error_delta,
            warning=self.config.error_warning,
            critical=self.config.error_critical,
        )
        self.windower = Windower(
            WindowSpec.of(cfg.window_size, cfg.window_seconds, cfg.step, cfg.allowed_lateness)
        )
        self._share()
        self.windows: list[WindowStat] = []
        """`WindowStat` of every window evaluated by the last `update` (for `AlertPolicy.decide`)."""

    def update(
        self, columns: Mapping[str, np.ndarray], scores: np.ndarray | None, ts: np.ndarray
    ) -> list[DriftSignal]:
        """Feed a batch: one array per feature (a feature absent from `columns` counts as missing),
        the model scores and the event times (float epoch seconds). Returns the drift signals."""
        ts = np.asarray(ts, dtype=np.float64)
        n = ts.size
        a = self.windower.assign(ts)
        signals: list[DriftSignal] = []
        pending: list[tuple[KSWindow, list[Evaluation]]] = []
        windows: list[WindowStat] = []
        monitors = list(self.features.values())
        inputs: list[np.ndarray | None] = [columns.get(m.name) for m in monitors]
        if self.score is not None:
            monitors.append(self.score)
            inputs.append(scores)
        for mon, values in zip(monitors, inputs, strict=True):
            if values is not None and np.shape(values)[:1] != ts.shape:
                raise ValueError(f"{mon.name}: {len(values)} values but {n} timestamps")
            if values is None:
                values = np.full(n, np.nan)
            sigs, ks_evals = mon.evaluate_assigned(values, a, ts)
            signals += sigs
            windows += mon.windows
            if ks_evals and mon.ks is not None:
                pending.append((mon.ks, ks_evals))
        if pending:
            p_values = [ev.p_value if ev.p_value is not None else 1.0 for _, evs in pending for ev in evs]
            if self.config.fdr_q is not None:
                reject = benjamini_hochberg(p_values, self.config.fdr_q).tolist()
            else:
                reject = [p < self.config.ks_alpha for p in p_values]
            i = 0
            for ks, evs in pending:
                signals += ks.signals(evs, reject[i : i + len(evs)])
                i += len(evs)
        self.windows = windows
        return signals

    def update_errors(self, errors: np.ndarray, ts: np.ndarray) -> list[DriftSignal]:
        """Feed 0/1 errors of labelled predictions (1 = wrong); concept-drift signals."""
        signals = self.errors.update(errors, ts)
        self.windows = list(self.errors.windows)
        if self.error_cusum is not None:
            signals += self.error_cusum.update(errors, ts)
            self.windows += self.error_cusum.windows
        return signals

    def state(self, include_reference: bool = True) -> dict[str, Any]:
        """JSON-able checkpoint of every detector (references included unless told not to)."""
        return {
            "config": self.config.model_dump(),
            "windower": self.windower.state(),
            "features": {n: m.state(include_reference) for n, m in self.features.items()},
            "score": self.score.state(include_reference) if self.score is not None else None,
            "errors": self.errors.state(),
            "error_cusum": self.error_cusum.state() if self.error_cusum is not None else None,
        }

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        features: Mapping[str, Reference] | None = None,
        score_reference: Reference | None = None,
    ) -> ModelMonitor:
        """Rebuild from `state` (pass the references if the state was saved without them)."""
        config = MonitorConfig.model_validate(state["config"])
        mon = cls({}, None, config)
        refs = features or {}
        mon.features = {
            n: FeatureMonitor.from_state(s, config, refs.get(n)) for n, s in state["features"].items()
        }
        if state["score"] is not None:
            mon.score = FeatureMonitor.from_state(state["score"], config, score_reference)
        mon.errors = ErrorRateDetector.from_state(state["errors"])
        ec = state.get("error_cusum")
        mon.error_cusum = ErrorCusum.from_state(ec) if ec is not None else None
        mon.windower = Windower.from_state(state["windower"])
        mon._share()
        return mon

    def _share(self) -> None:
        for fm in self._monitors():
            fm.share(self.windower)

    def _monitors(self) -> list[FeatureMonitor]:
        return [*self.features.values(), *([self.score] if self.score is not None else [])]


def _numeric(ref: Reference) -> bool:
    return ref.kind == "numeric" and len(ref.sample) >= 2
