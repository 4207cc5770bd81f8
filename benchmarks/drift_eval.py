"""Detection quality of Driftline's drift detectors against simple baselines, CD-MOA style.

Run on demand (no Kafka or Redis needed); not a test::

    .venv/bin/python benchmarks/drift_eval.py [--quick] [--seeds 20] [--control-events 1000000]

**Streams.** Synthetic events with 12 standard-normal numeric features ``x00..x11`` and two
categorical ones (``channel``: 5 categories, ``region``: 4), a model score
``sigmoid(sum(x) / sqrt(12))`` and a label ``[sum(x) / sqrt(12) + noise > 0]`` with noise making
the model wrong on ~10% of events; every event is labelled at once, so its 0/1 error is known.
Each seed has its own reference: 20,000 no-drift events from a different seed. The change point
is drawn per seed, uniformly in [40,000, 50,000), so it falls anywhere inside the windows; a
drift stream ends ``--tolerance`` events after it. Scenarios:

* ``abrupt`` / ``gradual`` / ``incremental`` covariate shift of 0.25, 0.5 and 1 standard deviation
  in ``x03`` (one of 12; its weight in the score is like every other's): abrupt = at once;
  gradual = each event drawn from the shifted distribution with probability growing linearly
  from 0 to 1 over 10,000 events; incremental = the mean moves linearly over 10,000 events;
* ``category mix``: ``channel``'s shares go from (.40 .25 .15 .12 .08) to (.20 .25 .15 .12 .28);
* ``concept flip``: inputs unchanged; the labels of events with ``x07 > 0.319`` (37.5% of them)
  flip, so the fixed model's error rate goes from ~10% to ~40% (measured and printed);
* ``control``: no drift, ``--control-events`` events per seed.

**Detectors**, fed the same stream in batches of 1,000 events with ``ts`` = event index (seconds):

* ``driftline``: `detectors.ModelMonitor` (``MonitorConfig(window_size=--window-size)``, other
  settings default: PSI + KS with Benjamini-Hochberg + missing rate on every feature, ADWIN on the
  score, CUSUM on every numeric feature and the score) on the 14 features and the score,
  ``update_errors`` on the error stream (the error-rate ADWIN and a Bernoulli CUSUM whose
  pre-change rate is the model's error rate on the 20,000 reference events), then
  `detectors.AlertPolicy` (default: cooldown 3600 s = 3600 events here). An alarm = the policy
  emits a **critical** alert; ``driftline w+c`` counts warning alerts too (same run).
* ``adwin-raw``: one river ``drift.ADWIN()`` (default delta 0.002) per raw numeric feature and one
  on the error stream; an alarm = any ``drift_detected``.
* ``psi-10k``: PSI of each tumbling 10,000-event window of each of the 14 features against the
  reference (10 reference-decile bins, categories as bins, proportions floored at 1e-4); an alarm =
  any PSI >= 0.2, no multiple-testing control.
* ``ks-10k``: ``scipy.stats.ks_2samp`` of each tumbling 10,000-event window of each numeric feature
  against the 20,000 reference values; an alarm = any p < 0.05, no correction.
* ``always-fire``: fires every ``--period`` events regardless of the data (sanity check of the
  measures: its MTFA must equal the period and its mean delay about half of it).

An alarm is timed at the end of the batch in which it is raised (every detector sees the same
1,000-event batches, so all share that quantisation). On a drift stream an alarm at or before the
change point is a false alarm; the first alarm in (change, change + tolerance] is the detection,
its delay the events in between; none is a miss. For the concept flip only alarms from the error
stream count as detections (input alarms there are not evidence of the flip). PSI and KS watch no
error stream, ADWIN and KS no categorical feature: those rows show "-".

**Measures** per scenario and detector, over all seeds: MTFA = no-drift events / false alarms
(events before the change, or the whole control stream); FA/1M = false alarms per 1,000,000 such
events; mean delay over the detected runs; median delay over all seeds (a miss counts as infinite,
so it is "miss" once half are missed); missed = share of seeds without a detection within the
tolerance.

Runtime on a 2-core box (``--jobs 2``, the default: one process per core over the (scenario, seed)
runs): ``--quick`` (3 seeds, 3 x 200,000-event controls, 2.8M events) 26 s; the default (20 seeds,
20 x 1,000,000-event controls, 34.4M events through every detector) about 4.7 min (281 s, with
other jobs on the box). CPU per event is printed below the table: Driftline 7.6 us (3.4 us
before the CUSUMs: they cost ~0.3 us per value and stream, 13 streams plus the errors here),
ADWIN on 13 streams 2.7 us (river's per-value Python ``update``), KS 2.4 us.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, Literal

import numpy as np
from river.drift import ADWIN
from scipy import stats

from detectors import ERROR_FEATURE, AlertPolicy, ModelMonitor, MonitorConfig, Reference

BATCH = 1000
N_NUMERIC = 12
NUMERIC = [f"x{i:02d}" for i in range(N_NUMERIC)]
DRIFT_FEATURE = 3  # x03 drifts in the covariate scenarios
FLIP_FEATURE = 7  # x07 > FLIP_AT is the region whose labels flip in the concept scenario
FLIP_SHARE = 0.375  # error 0.1 -> 0.1 + 0.8 * 0.375 = 0.4
FLIP_AT = float(stats.norm.ppf(1.0 - FLIP_SHARE))
BASE_ERROR = 0.1
LABEL_NOISE = math.tan(math.pi * BASE_ERROR)  # P(sign(z + e) != sign(z)) = atan(s) / pi for z, e/s ~ N(0, 1)
WEIGHTS = np.full(N_NUMERIC, 1.0 / math.sqrt(N_NUMERIC))
CATEGORIES: dict[str, tuple[list[str], list[float]]] = {
    "channel": (["web", "app", "pos", "phone", "partner"], [0.40, 0.25, 0.15, 0.12, 0.08]),
    "region": (["north", "south", "east", "west"], [0.4, 0.3, 0.2, 0.1]),
}
CHANNEL_AFTER = [0.20, 0.25, 0.15, 0.12, 0.28]
REFERENCE_EVENTS = 20_000
CHANGE_FROM, CHANGE_SPREAD = 40_000, 10_000
DRIFT_WIDTH = 10_000
CHUNK = 100_000  # events generated at once (bounds memory on the 1M-event controls)
PSI_THRESHOLD, KS_ALPHA, BASELINE_WINDOW = 0.2, 0.05, 10_000
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # fixed alert timestamps: cheaper than now() and irrelevant here

Kind = Literal["abrupt", "gradual", "incremental", "categorical", "concept", "control"]
DRIFTLINE, DRIFTLINE_ANY, ADWIN_RAW, PSI_10K, KS_10K, ALWAYS = (
    "driftline",
    "driftline w+c",
    "adwin-raw",
    "psi-10k",
    "ks-10k",
    "always-fire",
)
DETECTORS = [DRIFTLINE, DRIFTLINE_ANY, ADWIN_RAW, PSI_10K, KS_10K, ALWAYS]
BASELINES = [ADWIN_RAW, PSI_10K, KS_10K]
# What each detector can see: a row is "-" where it cannot see the drifted stream.
SEES: dict[str, set[Kind]] = {
    ADWIN_RAW: {"abrupt", "gradual", "incremental", "concept", "control"},
    PSI_10K: {"abrupt", "gradual", "incremental", "categorical", "control"},
    KS_10K: {"abrupt", "gradual", "incremental", "control"},
}


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Kind
    shift: float = 0.0
    width: int = 0


SCENARIOS = [
    *(Scenario(f"abrupt {s:g}sd", "abrupt", s) for s in (0.25, 0.5, 1.0)),
    *(Scenario(f"gradual {s:g}sd", "gradual", s, DRIFT_WIDTH) for s in (0.25, 0.5, 1.0)),
    *(Scenario(f"incremental {s:g}sd", "incremental", s, DRIFT_WIDTH) for s in (0.25, 0.5, 1.0)),
    Scenario("category mix", "categorical"),
    Scenario("concept flip", "concept"),
    CONTROL := Scenario("control", "control"),
]


@dataclass(frozen=True)
class Settings:
    seeds: int
    control_events: int
    tolerance: int
    window_size: int
    adwin_features: bool
    period: int
    cusum_ert: float = 1e8  # MonitorConfig.cusum_ert_events: the CUSUMs' false-alarm budget


# ---- streams -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    start: int
    numeric: np.ndarray  # (12, n): one contiguous row per feature
    categorical: dict[str, np.ndarray]
    scores: np.ndarray
    errors: np.ndarray

    @property
    def end(self) -> int:
        return self.start + self.scores.size

    @property
    def ts(self) -> np.ndarray:
        return np.arange(self.start, self.end, dtype=np.float64)

    def columns(self) -> dict[str, np.ndarray]:
        return {**dict(zip(NUMERIC, self.numeric, strict=True)), **self.categorical}

    def part(self, lo: int, hi: int) -> Batch:
        return Batch(
            self.start + lo,
            self.numeric[:, lo:hi],
            {k: v[lo:hi] for k, v in self.categorical.items()},
            self.scores[lo:hi],
            self.errors[lo:hi],
        )


def ramp(index: np.ndarray, change: int, width: int) -> np.ndarray:
    """Drift progress per event: 0 before the change, then linear to 1 over `width` (a step if 0)."""
    if width <= 0:
        return (index >= change).astype(np.float64)
    out: np.ndarray = np.clip((index - change + 1) / width, 0.0, 1.0)
    return out


def generate(sc: Scenario, rng: np.random.Generator, start: int, n: int, change: float) -> Batch:
    """Events ``start .. start + n - 1`` of scenario `sc` with its change at event `change`."""
    index = np.arange(start, start + n)
    x = rng.standard_normal((N_NUMERIC, n))
    if sc.kind in ("abrupt", "gradual", "incremental"):
        progress = ramp(index, int(change), sc.width)
        if sc.kind == "gradual":  # each event from the old or the new distribution
            progress = (rng.random(n) < progress).astype(np.float64)
        x[DRIFT_FEATURE] += sc.shift * progress
    cats = {name: rng.choice(labels, size=n, p=p) for name, (labels, p) in CATEGORIES.items()}
    if sc.kind == "categorical":
        after = index >= change
        labels = CATEGORIES["channel"][0]
        cats["channel"][after] = rng.choice(labels, size=int(after.sum()), p=CHANNEL_AFTER)
    z = WEIGHTS @ x
    label = z + LABEL_NOISE * rng.standard_normal(n) > 0.0
    if sc.kind == "concept":
        label ^= (index >= change) & (x[FLIP_FEATURE] > FLIP_AT)
    errors = ((z > 0.0) != label).astype(np.float64)
    return Batch(start, x, cats, 1.0 / (1.0 + np.exp(-z)), errors)


def batches(sc: Scenario, rng: np.random.Generator, n: int, change: float) -> Iterator[Batch]:
    for start in range(0, n, CHUNK):
        chunk = generate(sc, rng, start, min(CHUNK, n - start), change)
        for lo in range(0, chunk.scores.size, BATCH):
            yield chunk.part(lo, lo + BATCH)


@dataclass(frozen=True)
class ReferenceData:
    numeric: np.ndarray  # (12, 20_000)
    categorical: dict[str, np.ndarray]
    features: dict[str, Reference]
    score: Reference
    error_rate: float  # the fixed model's error rate on the reference events (its "holdout" rate)


def reference_data(seed: int) -> ReferenceData:
    rng = np.random.default_rng([seed, 10_000])
    ref = generate(CONTROL, rng, 0, REFERENCE_EVENTS, math.inf)
    features = {name: Reference.from_values(v, seed=seed) for name, v in ref.columns().items()}
    score = Reference.from_values(ref.scores, seed=seed)
    return ReferenceData(ref.numeric, ref.categorical, features, score, float(ref.errors.mean()))


# ---- detectors ---------------------------------------------------------------------------------
@dataclass
class Alarms:
    """Batch ends at which a detector alarmed; ``errors``: those raised on the error stream."""

    all: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)

    def add(self, end: int, on_errors: bool) -> None:
        if not self.all or self.all[-1] != end:
            self.all.append(end)
        if on_errors and (not self.errors or self.errors[-1] != end):
            self.errors.append(end)


class Detector:
    """One detector (or several views of one, like Driftline's) fed the stream batch by batch."""

    names: ClassVar[tuple[str, ...]]

    def __init__(self, ref: ReferenceData, s: Settings) -> None:
        self.alarms = {name: Alarms() for name in self.names}

    def update(self, b: Batch) -> None:
        raise NotImplementedError


class Driftline(Detector):
    names = (DRIFTLINE, DRIFTLINE_ANY)

    def __init__(self, ref: ReferenceData, s: Settings) -> None:
        super().__init__(ref, s)
        config = MonitorConfig(
            window_size=s.window_size, adwin_features=s.adwin_features, cusum_ert_events=s.cusum_ert
        )
        self.monitor = ModelMonitor(
            ref.features, ref.score, config, reference_error_rate=ref.error_rate,
            reference_error_count=REFERENCE_EVENTS,
        )  # fmt: skip
        self.policy = AlertPolicy()

    def update(self, b: Batch) -> None:
        ts = b.ts
        signals = self.monitor.update(b.columns(), b.scores, ts)
        windows = list(self.monitor.windows)  # update_errors replaces monitor.windows
        signals += self.monitor.update_errors(b.errors, ts)
        windows += self.monitor.windows
        for alert in self.policy.decide(signals, model="eval", version=1, windows=windows, now=NOW):
            on_errors = alert.feature == ERROR_FEATURE
            self.alarms[DRIFTLINE_ANY].add(b.end, on_errors)
            if alert.severity == "critical":
                self.alarms[DRIFTLINE].add(b.end, on_errors)


class AdwinRaw(Detector):
    names = (ADWIN_RAW,)

    def __init__(self, ref: ReferenceData, s: Settings) -> None:
        super().__init__(ref, s)
        self.features = [ADWIN() for _ in range(N_NUMERIC)]
        self.errors = ADWIN()

    @staticmethod
    def _feed(adwin: ADWIN, values: np.ndarray) -> bool:
        fired = False
        for v in values.tolist():
            adwin.update(v)
            fired |= adwin.drift_detected
        return fired

    def update(self, b: Batch) -> None:
        inputs = [self._feed(a, col) for a, col in zip(self.features, b.numeric, strict=True)]
        on_errors = self._feed(self.errors, b.errors)
        if on_errors or any(inputs):
            self.alarms[ADWIN_RAW].add(b.end, on_errors)


class FixedWindow:
    """Buffers tumbling `BASELINE_WINDOW`-event windows for the PSI and KS baselines."""

    def __init__(self) -> None:
        self.parts: list[Batch] = []

    def push(self, b: Batch) -> list[Batch] | None:
        """The window's batches once `b` completes it, else None."""
        self.parts.append(b)
        if b.end % BASELINE_WINDOW:
            return None
        parts, self.parts = self.parts, []
        return parts


class PsiBaseline(Detector):
    names = (PSI_10K,)

    def __init__(self, ref: ReferenceData, s: Settings) -> None:
        super().__init__(ref, s)
        qs = np.linspace(0.0, 1.0, 11)[1:-1]
        self.edges = [np.quantile(col, qs) for col in ref.numeric]
        self.ref_numeric = [
            self._numeric_props(e, col) for e, col in zip(self.edges, ref.numeric, strict=True)
        ]
        self.labels = {name: np.array(sorted(labels)) for name, (labels, _) in CATEGORIES.items()}
        self.ref_categorical = {name: self._cat_props(name, ref.categorical[name]) for name in CATEGORIES}
        self.window = FixedWindow()

    @staticmethod
    def _numeric_props(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
        return counts / values.size

    def _cat_props(self, name: str, values: np.ndarray) -> np.ndarray:
        labels = self.labels[name]
        counts = np.bincount(np.searchsorted(labels, values), minlength=labels.size)
        return counts / values.size

    @staticmethod
    def psi(window: np.ndarray, reference: np.ndarray) -> float:
        w, r = np.maximum(window, 1e-4), np.maximum(reference, 1e-4)
        return float(np.sum((w - r) * np.log(w / r)))

    def update(self, b: Batch) -> None:
        parts = self.window.push(b)
        if parts is None:
            return
        numeric = np.concatenate([p.numeric for p in parts], axis=1)
        values = [
            self.psi(self._numeric_props(e, col), r)
            for e, col, r in zip(self.edges, numeric, self.ref_numeric, strict=True)
        ]
        for name, ref in self.ref_categorical.items():
            col = np.concatenate([p.categorical[name] for p in parts])
            values.append(self.psi(self._cat_props(name, col), ref))
        if max(values) >= PSI_THRESHOLD:
            self.alarms[PSI_10K].add(b.end, False)


class KsBaseline(Detector):
    names = (KS_10K,)

    def __init__(self, ref: ReferenceData, s: Settings) -> None:
        super().__init__(ref, s)
        self.reference = ref.numeric
        self.window = FixedWindow()

    def update(self, b: Batch) -> None:
        parts = self.window.push(b)
        if parts is None:
            return
        numeric = np.concatenate([p.numeric for p in parts], axis=1)
        p_values = [
            stats.ks_2samp(col, ref, method="asymp").pvalue
            for col, ref in zip(numeric, self.reference, strict=True)
        ]
        if min(p_values) < KS_ALPHA:
            self.alarms[KS_10K].add(b.end, False)


class AlwaysFire(Detector):
    names = (ALWAYS,)

    def __init__(self, ref: ReferenceData, s: Settings) -> None:
        super().__init__(ref, s)
        self.period = s.period

    def update(self, b: Batch) -> None:
        if b.end % self.period == 0:
            self.alarms[ALWAYS].add(b.end, True)


DETECTOR_TYPES: list[type[Detector]] = [
    Driftline,
    AdwinRaw,
    PsiBaseline,
    KsBaseline,
    AlwaysFire,
]


# ---- one run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    scenario: int
    seed: int
    settings: Settings


@dataclass
class RunResult:
    scenario: str
    seed: int
    events: int
    change: int | None
    alarms: dict[str, Alarms]
    seconds: dict[str, float]  # CPU time per detector
    error_rates: tuple[float, float]  # before / after the change (after: 0 on controls)


def run_one(task: Task) -> RunResult:
    """Feed one seed's stream of one scenario to every detector."""
    sc, s = SCENARIOS[task.scenario], task.settings
    rng = np.random.default_rng([task.seed, task.scenario])
    if sc.kind == "control":
        change: int | None = None
        n = s.control_events
    else:
        change = CHANGE_FROM + int(rng.integers(CHANGE_SPREAD))
        n = -(-(change + s.tolerance) // BATCH) * BATCH
    ref = reference_data(task.seed)
    detectors: list[Detector] = [t(ref, s) for t in DETECTOR_TYPES]
    seconds = dict.fromkeys(DETECTORS, 0.0)
    errors = np.zeros((2, 2))  # [before, after] x [sum, count]
    for b in batches(sc, rng, n, math.inf if change is None else change):
        after = b.ts >= (math.inf if change is None else change)
        errors[:, 0] += [b.errors[~after].sum(), b.errors[after].sum()]
        errors[:, 1] += [(~after).sum(), after.sum()]
        for det in detectors:
            started = time.process_time()
            det.update(b)
            seconds[det.names[0]] += time.process_time() - started
    alarms = {name: a for det in detectors for name, a in det.alarms.items()}
    rates = errors[:, 0] / np.maximum(errors[:, 1], 1)
    return RunResult(sc.name, task.seed, n, change, alarms, seconds, (float(rates[0]), float(rates[1])))


# ---- measures ----------------------------------------------------------------------------------
@dataclass
class Measures:
    runs: int
    no_drift_events: int
    false_alarms: int
    delays: list[float] | None  # per run, inf = missed; None on controls

    @property
    def mtfa(self) -> float:
        return self.no_drift_events / self.false_alarms if self.false_alarms else math.inf

    @property
    def fa_per_million(self) -> float:
        return 1e6 * self.false_alarms / self.no_drift_events

    @property
    def mean_delay(self) -> float:
        found = [d for d in self.delays or [] if math.isfinite(d)]
        return statistics.fmean(found) if found else math.nan

    @property
    def median_delay(self) -> float:
        return statistics.median(self.delays) if self.delays else math.nan

    @property
    def missed(self) -> float:
        return sum(math.isinf(d) for d in self.delays) / len(self.delays) if self.delays else math.nan


def detection_delay(alarms: Sequence[int], change: int, tolerance: int) -> float:
    """Events from the change to the first alarm after it within `tolerance`; inf if none."""
    return next((float(a - change) for a in alarms if change < a <= change + tolerance), math.inf)


def measure(runs: list[RunResult], detector: str, kind: Kind, tolerance: int) -> Measures:
    events = false_alarms = 0
    delays: list[float] = []
    for r in runs:
        a = r.alarms[detector]
        if r.change is None:
            events += r.events
            false_alarms += len(a.all)
            continue
        events += r.change
        false_alarms += sum(t <= r.change for t in a.all)
        hits = a.errors if kind == "concept" and detector != ALWAYS else a.all
        delays.append(detection_delay(hits, r.change, tolerance))
    return Measures(len(runs), events, false_alarms, None if kind == "control" else delays)


def applies(detector: str, kind: Kind) -> bool:
    return detector not in SEES or kind in SEES[detector]


# ---- report ------------------------------------------------------------------------------------
def fmt_events(x: float) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:,.0f}"


def table(results: dict[str, dict[str, Measures | None]]) -> str:
    head = (
        "scenario",
        "detector",
        "runs",
        "false al.",
        "MTFA",
        "FA/1M",
        "mean delay",
        "median delay",
        "missed",
    )
    rows = []
    for scenario, per_detector in results.items():
        for detector, m in per_detector.items():
            if m is None:
                rows.append((scenario, detector, *["-"] * 7))
                continue
            median = m.median_delay
            rows.append(
                (
                    scenario,
                    detector,
                    str(m.runs),
                    f"{m.false_alarms:,}",
                    fmt_events(m.mtfa),
                    f"{m.fa_per_million:,.1f}",
                    fmt_events(m.mean_delay) if m.delays is not None else "-",
                    ("miss" if math.isinf(median) else fmt_events(median)) if m.delays is not None else "-",
                    f"{100 * m.missed:.0f}%" if m.delays is not None else "-",
                )
            )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(head), "-+-".join("-" * w for w in widths)]
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            out.append("-+-".join("-" * w for w in widths))
        out.append(line(row))
        previous = row[0]
    return "\n".join(out)


def met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def no_worse(dl: Measures, base: Measures) -> bool:
    """Driftline's delay is equal or better: median delay (miss = inf) and missed rate both <=."""
    return dl.median_delay <= base.median_delay and dl.missed <= base.missed


def _delay(m: Measures) -> str:
    if math.isinf(m.median_delay):
        return f"miss ({100 * m.missed:.0f}% missed)"
    return fmt_events(m.median_delay) + (f" ({100 * m.missed:.0f}% missed)" if m.missed else "")


def compare(results: dict[str, dict[str, Measures | None]], mine: str, base: str) -> tuple[bool, bool, str]:
    """(fewer control false alarms, delay no worse in every scenario both see, one-line summary)."""
    dl, b = results["control"][mine], results["control"][base]
    assert dl is not None and b is not None
    fewer = dl.false_alarms * b.no_drift_events < b.false_alarms * dl.no_drift_events
    worse, compared = [], 0
    for scenario, per in results.items():
        d, m = per[mine], per[base]
        if scenario == "control" or d is None or m is None:
            continue
        compared += 1
        if not no_worse(d, m):
            worse.append(f"{scenario} {_delay(d)} vs {_delay(m)}")
    tie = dl.false_alarms == 0 == b.false_alarms
    fa = "fewer" if fewer else ("tied at 0" if tie else "NOT fewer")
    text = (
        f"vs {base}: control false alarms/1M {dl.fa_per_million:.1f} vs {b.fa_per_million:.1f} ({fa}); "
        f"median delay and missed rate equal or better in {compared - len(worse)}/{compared} scenarios"
        + (f"; worse (median delay): {'; '.join(worse)}" if worse else "")
    )
    return fewer or tie, not worse, text


def target_lines(results: dict[str, dict[str, Measures | None]]) -> list[str]:
    control = results["control"]
    dl, dl_any = control[DRIFTLINE], control[DRIFTLINE_ANY]
    assert dl is not None and dl_any is not None
    lines = [
        f"  zero critical false alarms per 1,000,000 no-drift events: {met(dl.false_alarms == 0)} "
        f"({dl.false_alarms} critical, {dl_any.false_alarms} warning-or-critical alarms in "
        f"{dl.no_drift_events:,} control events)"
    ]
    for scenario, limit, what in (
        ("abrupt 0.5sd", 5000, "0.5-sd shift in one of 12 features detected within 5,000 events"),
        ("concept flip", 3000, "concept flip detected within 3,000 labelled events"),
    ):
        m = results[scenario][DRIFTLINE]
        assert m is not None and m.delays is not None
        within = sum(d <= limit for d in m.delays)
        lines.append(
            f"  {what} (median): {met(m.median_delay <= limit)} (median {_delay(m)}; "
            f"{within}/{len(m.delays)} seeds within {limit:,})"
        )
    verdicts = [compare(results, DRIFTLINE, base) for base in BASELINES]
    ok = all(fa and delay for fa, delay, _ in verdicts)
    ties = [b for b in BASELINES if (m := control[b]) is not None and m.false_alarms == 0]
    note = f" (zero false alarms tied, not beaten, with {', '.join(ties)})" if ok and ties else ""
    lines.append(f"  fewer false alarms than every baseline at equal or better delay: {met(ok)}{note}")
    lines += [f"    {text}" for *_, text in verdicts]
    lines.append("  for information, counting warning alerts as alarms too (driftline w+c):")
    lines += [f"    {compare(results, DRIFTLINE_ANY, base)[2]}" for base in BASELINES]
    return lines


def summarise(runs: list[RunResult], s: Settings) -> dict[str, dict[str, Measures | None]]:
    results: dict[str, dict[str, Measures | None]] = {}
    for sc in SCENARIOS:
        mine = [r for r in runs if r.scenario == sc.name]
        results[sc.name] = {
            d: measure(mine, d, sc.kind, s.tolerance) if applies(d, sc.kind) else None for d in DETECTORS
        }
    return results


def tasks(s: Settings) -> list[Task]:
    # Controls first: the longest tasks, so the pool ends evenly.
    order = [len(SCENARIOS) - 1, *range(len(SCENARIOS) - 1)]
    return [Task(i, seed, s) for i in order for seed in range(s.seeds)]


def run_all(todo: list[Task], jobs: int) -> list[RunResult]:
    if jobs <= 1:
        return [run_one(t) for t in todo]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run_one, todo))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="3 seeds, 200,000-event controls (about a minute)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per scenario (20; --quick 3)")
    ap.add_argument("--control-events", type=int, default=None, help="events per control stream (1,000,000)")
    ap.add_argument("--tolerance", type=int, default=20_000, help="events after the change to detect it")
    # 2,000-event windows: 5,000 missed the 0.5-sd delay target (median 5,410) with no fewer false alarms.
    ap.add_argument("--window-size", type=int, default=2000, help="Driftline MonitorConfig.window_size")
    ap.add_argument("--adwin-features", action="store_true", help="Driftline: ADWIN on every numeric feature")
    ap.add_argument(
        "--cusum-ert",
        type=float,
        default=1e8,
        help="Driftline MonitorConfig.cusum_ert_events: events per CUSUM false alarm (1e8); lower it to "
        "compare delays at a baseline's false-alarm rate",
    )
    ap.add_argument("--period", type=int, default=5000, help="always-fire period (events, multiple of 1000)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    return ap.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    seeds = args.seeds or (3 if args.quick else 20)
    control = args.control_events or (200_000 if args.quick else 1_000_000)
    for name, value in (("control-events", control), ("period", args.period)):
        if value % BATCH:
            raise SystemExit(f"--{name} must be a multiple of {BATCH}")
    return Settings(
        seeds, control, args.tolerance, args.window_size, args.adwin_features, args.period, args.cusum_ert
    )


def report(runs: list[RunResult], s: Settings, wall: float) -> str:
    results = summarise(runs, s)
    flips = [r.error_rates for r in runs if r.scenario == "concept flip"]
    cpu = {d: sum(r.seconds[d] for r in runs) for d in DETECTORS if d != DRIFTLINE_ANY}
    events = sum(r.events for r in runs)
    out = [
        table(results),
        "",
        "legend: runs = seeds; false al. = alarms at or before the change (controls: all alarms); MTFA = "
        "no-drift events per false alarm; FA/1M = false alarms per 1,000,000 no-drift events; delays in "
        f"events from the change to the first alarm within {s.tolerance:,} (mean over detected runs, median "
        "over all seeds with a miss as infinite); driftline = critical alerts, driftline w+c = warning or "
        "critical alerts of the same run; '-' = the detector does not see that stream.",
        f"driftline: MonitorConfig(window_size={s.window_size}, adwin_features={s.adwin_features}, "
        f"cusum_ert_events={s.cusum_ert:g}) + "
        "AlertPolicy() defaults; always-fire period "
        f"{s.period:,}; concept flip error rate {statistics.fmean(f[0] for f in flips):.3f} before, "
        f"{statistics.fmean(f[1] for f in flips):.3f} after (mean over seeds); every event labelled.",
        "CPU per event: "
        + ", ".join(f"{d} {1e6 * t / events:.2f} us" for d, t in cpu.items())
        + f" ({events:,} events per detector)",
        "",
        "targets:",
        *target_lines(results),
        "",
        f"total {wall:.0f}s wall",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings_from(args)
    todo = tasks(s)
    print(
        f"drift evaluation: {len(SCENARIOS)} scenarios x {s.seeds} seeds, controls of {s.control_events:,} "
        f"events, {args.jobs} process(es)",
        flush=True,
    )
    started = time.perf_counter()
    runs = run_all(todo, args.jobs)
    print(report(runs, s, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
