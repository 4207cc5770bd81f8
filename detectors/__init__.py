"""Online drift detectors and the alert policy. Imports none of stream/, inference/, feature_store/.

Batch-first: every detector takes numpy arrays (``update(values, ts) -> list[DriftSignal]``),
checkpoints to a JSON-able dict (``state()`` / ``from_state()``) and never pickles.

========================================  ============================================================
`detectors.signals`                       `DriftSignal`, `WindowStat`
`detectors.reference`                     `Reference` (the input model), `Binning`, PSI smoothing
`detectors.windowing`                     count / event-time / capped windows made of panes
`detectors.psi`                           `PSIWindow`, `psi_from_counts`
`detectors.ks`                            `KSWindow`, `benjamini_hochberg`
`detectors.missing`                       `MissingRate`
`detectors.adwin`                         `AdwinDetector`, `ErrorRateDetector` (river ADWIN)
`detectors.cusum`                         `CusumDetector`, `ErrorCusum`: CUSUM calibrated to a budget
`detectors.monitor`                       `FeatureMonitor`, `ModelMonitor` (in-process)
`detectors.window_store`                  `WindowStore`: windows merged across workers in Redis
`detectors.alerts`                        `DriftAlert`, `AlertPolicy`
`detectors.calibration`                   thresholds from a false-alarm budget, severity
========================================  ============================================================
"""

from detectors.adwin import AdwinDetector, ErrorRateDetector
from detectors.alerts import AlertPolicy, DriftAlert
from detectors.cusum import CusumDetector, ErrorCusum
from detectors.ks import KSWindow, benjamini_hochberg
from detectors.missing import MissingRate
from detectors.monitor import FeatureMonitor, ModelMonitor, MonitorConfig
from detectors.psi import PSIWindow, psi_from_counts
from detectors.reference import Binning, Reference
from detectors.signals import ERROR_FEATURE, SCORE_FEATURE, DriftSignal, WindowStat
from detectors.window_store import WindowStore

__all__ = [
    "ERROR_FEATURE",
    "SCORE_FEATURE",
    "AdwinDetector",
    "AlertPolicy",
    "Binning",
    "CusumDetector",
    "DriftAlert",
    "DriftSignal",
    "ErrorCusum",
    "ErrorRateDetector",
    "FeatureMonitor",
    "KSWindow",
    "MissingRate",
    "ModelMonitor",
    "MonitorConfig",
    "PSIWindow",
    "Reference",
    "WindowStat",
    "WindowStore",
    "benjamini_hochberg",
    "psi_from_counts",
]
