"""The in-process ModelMonitor with the AlertPolicy: quiet without drift, one alert per drift."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from detectors.alerts import AlertPolicy, DriftAlert
from detectors.monitor import FeatureMonitor, ModelMonitor, MonitorConfig
from detectors.reference import Reference
from detectors.signals import DriftSignal

MERCHANTS = ["grocery", "travel", "electronics", "online_retail", "fuel", "restaurants"]
MERCHANT_P = [0.3, 0.1, 0.1, 0.15, 0.15, 0.2]
COUNTRIES = ["DE", "FR", "US", "GB"]


def _numeric(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """12 numeric features shaped like the synthetic fraud stream (skewed, discrete, flags)."""
    cols = {
        "amount": rng.lognormal(3.5, 1.0, n),
        "hour": rng.integers(0, 24, n).astype(float),
        "distance_from_home": rng.gamma(2.0, 10.0, n),
        "distance_from_last_txn": rng.exponential(5.0, n),
        "ratio_to_median_amount": rng.lognormal(0.0, 0.5, n),
        "merchant_risk": rng.beta(2.0, 5.0, n),
        "account_age_days": rng.uniform(0, 3650, n),
        "card_present": (rng.random(n) < 0.6).astype(float),
        "used_chip": (rng.random(n) < 0.5).astype(float),
        "used_pin": (rng.random(n) < 0.3).astype(float),
        "online_order": (rng.random(n) < 0.4).astype(float),
        "device_trust_score": rng.normal(0.7, 0.1, n),
    }
    cols["amount"][rng.random(n) < 0.02] = np.nan  # a feature with a small, steady missing rate
    return cols


def _columns(rng: np.random.Generator, n: int, categorical: bool = True) -> dict[str, np.ndarray]:
    cols = _numeric(rng, n)
    if categorical:
        cols["merchant_category"] = rng.choice(MERCHANTS, size=n, p=MERCHANT_P).astype(object)
        cols["country"] = rng.choice(COUNTRIES, size=n).astype(object)
    return cols


def _score(cols: dict[str, np.ndarray]) -> np.ndarray:
    z = 0.02 * np.nan_to_num(cols["amount"]) + 3.0 * cols["merchant_risk"] - 1.0
    return 1.0 / (1.0 + np.exp(-z))


def _references(seed: int, categorical: bool = True) -> tuple[dict[str, Reference], Reference]:
    rng = np.random.default_rng(seed)
    cols = _columns(rng, 20_000, categorical)
    refs = {name: Reference.from_values(values, seed=seed) for name, values in cols.items()}
    return refs, Reference.from_values(_score(cols), seed=seed)


def _batches(
    rng: np.random.Generator, n: int, batch: int = 1000, categorical: bool = True
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    for start in range(0, n, batch):
        cols = _columns(rng, batch, categorical)
        ts = (start + np.arange(batch)) / 1000.0  # 1000 events per second of event time
        yield cols, _score(cols), ts


def _run(
    monitor: ModelMonitor,
    policy: AlertPolicy,
    batches: Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]],
) -> tuple[list[DriftSignal], list[DriftAlert]]:
    signals: list[DriftSignal] = []
    alerts: list[DriftAlert] = []
    for cols, scores, ts in batches:
        sigs = monitor.update(cols, scores, ts)
        signals += sigs
        alerts += policy.decide(sigs, model="fraud", version=1, windows=monitor.windows)
    return signals, alerts


def test_no_drift_stream_raises_no_critical_alert() -> None:
    refs, score_ref = _references(seed=1)
    monitor = ModelMonitor(refs, score_ref, MonitorConfig(adwin_features=True))
    policy = AlertPolicy(cooldown_seconds=20.0)
    signals, alerts = _run(monitor, policy, _batches(np.random.default_rng(2), 200_000))
    assert [a for a in alerts if a.severity == "critical"] == []
    assert len(signals) <= 3, [s.message for s in signals]  # at most a stray warning
    # it did look: 40 windows x (14 PSI + 13 KS + 14 missing-rate) evaluations
    assert monitor.features["amount"].psi.windower.n_seen == 200_000


def test_abrupt_one_sigma_shift_gives_exactly_one_critical_alert() -> None:
    refs, score_ref = _references(seed=3, categorical=False)
    assert len(refs) == 12
    monitor = ModelMonitor(refs, score_ref, MonitorConfig(adwin_features=True))
    policy = AlertPolicy(cooldown_seconds=20.0)  # the drift lasts 100 s: hysteresis must hold it
    rng = np.random.default_rng(4)

    def stream() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        for i, (cols, scores, ts) in enumerate(_batches(rng, 200_000, categorical=False)):
            if i >= 102:  # from event 102,000 (mid-window), one sigma down
                cols["device_trust_score"] = cols["device_trust_score"] - 0.1
            yield cols, scores, ts

    signals, alerts = _run(monitor, policy, stream())
    critical = [a for a in alerts if a.severity == "critical"]
    assert [(a.feature, a.model, a.version) for a in critical] == [("device_trust_score", "fraud", 1)]
    assert critical[0].window_end_ts >= 102.0
    # several detectors and many windows saw it, yet it is one alert (others fold into it)
    drifted = [s for s in signals if s.feature == "device_trust_score"]
    assert len({s.detector for s in drifted}) >= 2 and len(drifted) > 10
    assert {a.feature for a in alerts} == {"device_trust_score"}
    assert len(alerts) <= 2  # at most a warning first, on the window the shift started in


def test_alert_rearms_after_drift_ends() -> None:
    refs, score_ref = _references(seed=5, categorical=False)
    monitor = ModelMonitor(refs, score_ref, MonitorConfig())
    policy = AlertPolicy(cooldown_seconds=10.0)
    rng = np.random.default_rng(6)

    def stream() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        for i, (cols, scores, ts) in enumerate(_batches(rng, 150_000, categorical=False)):
            if 30 <= i < 60 or i >= 110:  # two separate episodes
                cols["merchant_risk"] = cols["merchant_risk"] + 0.16
            yield cols, scores, ts

    _, alerts = _run(monitor, policy, stream())
    critical = [(a.feature, a.window_end_ts) for a in alerts if a.severity == "critical"]
    features = {f for f, _ in critical}
    assert features <= {"merchant_risk", "__score__"}
    risk = [t for f, t in critical if f == "merchant_risk"]
    assert len(risk) == 2 and risk[0] < 60 <= 110 <= risk[1]


def test_unseen_category_flood_is_detected_via_the_unseen_bin() -> None:
    refs, score_ref = _references(seed=7)
    monitor = ModelMonitor(refs, score_ref)
    rng = np.random.default_rng(8)
    signals: list[DriftSignal] = []
    for i, (cols, scores, ts) in enumerate(_batches(rng, 30_000)):
        if i >= 15:
            flood = rng.random(1000) < 0.3
            cols["merchant_category"][flood] = "crypto_exchange"
        signals += monitor.update(cols, scores, ts)
    assert {(s.feature, s.detector, s.severity) for s in signals} == {
        ("merchant_category", "psi", "critical")
    }
    psi = monitor.features["merchant_category"].psi
    assert psi.binning.labels[psi.binning.unseen_bin or 0] == "unseen"
    counts = psi.bin_counts(np.array(["crypto_exchange", "grocery", "crypto_exchange"], dtype=object))
    assert counts[psi.binning.unseen_bin or 0] == 2
    assert signals[0].window_start_index == 15_000


def test_missing_rate_jump_is_detected() -> None:
    refs, score_ref = _references(seed=9)
    monitor = ModelMonitor(refs, score_ref)
    rng = np.random.default_rng(10)
    signals: list[DriftSignal] = []
    for i, (cols, scores, ts) in enumerate(_batches(rng, 30_000)):
        if i >= 15:  # the upstream starts dropping the field: None (JSON null) and NaN both
            gone = rng.random(1000) < 0.25
            col = cols["distance_from_home"].astype(object)
            col[gone] = None
            col[gone & (rng.random(1000) < 0.5)] = float("nan")
            cols["distance_from_home"] = col
            cols["country"][gone] = None
        signals += monitor.update(cols, scores, ts)
    found = {(s.feature, s.detector, s.severity) for s in signals}
    assert ("distance_from_home", "missing_rate", "critical") in found
    assert ("country", "missing_rate", "critical") in found
    assert {f for f, _, _ in found} == {"distance_from_home", "country"}
    jump = next(s for s in signals if s.detector == "missing_rate")
    assert 0.2 < jump.statistic < 0.3 and jump.p_value is not None and jump.p_value < 1e-10


# Batches no detector may crash on (also used by the CUSUM tests).
ODD_VALUES = [
    np.full(500, np.nan),
    np.array([None] * 500, dtype=object),
    np.array([None, float("nan"), "x", 3, True, 2.5, float("inf"), -float("inf")] * 60, dtype=object),
    np.array([np.inf, -np.inf, np.nan, 1.0] * 125),
    np.empty(0),
]


@pytest.mark.parametrize("values", ODD_VALUES)
def test_odd_values_never_crash(values: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    numeric = FeatureMonitor(
        "x", Reference.from_values(rng.normal(size=1000)), MonitorConfig(window_size=100, adwin_features=True)
    )
    categorical = FeatureMonitor(
        "c", Reference.from_values(rng.choice(["a", "b"], size=1000)), MonitorConfig(window_size=100)
    )
    ts = np.arange(values.size, dtype=float)
    for mon in (numeric, categorical):
        for _ in range(3):
            for s in mon.update(values, ts):
                assert s.severity in ("warning", "critical")


def test_mismatched_lengths_are_refused() -> None:
    refs, score_ref = _references(seed=1, categorical=False)
    monitor = ModelMonitor(refs, score_ref)
    cols = _numeric(np.random.default_rng(0), 100)
    with pytest.raises(ValueError, match="timestamps"):
        monitor.update(cols, np.zeros(99), np.arange(100.0))


def test_a_missing_column_counts_as_missing() -> None:
    refs, score_ref = _references(seed=1, categorical=False)
    monitor = ModelMonitor(refs, score_ref, MonitorConfig(window_size=1000))
    cols = _numeric(np.random.default_rng(0), 1000)
    del cols["hour"]
    signals = monitor.update(cols, _score(cols), np.arange(1000.0))
    assert ("hour", "missing_rate", "critical") in {(s.feature, s.detector, s.severity) for s in signals}


@pytest.mark.parametrize(
    "config",
    [
        MonitorConfig(adwin_features=True),
        MonitorConfig(window_size=4000, step=1000),
        MonitorConfig(window_seconds=3.0, allowed_lateness=0.5),
    ],
)
def test_checkpoint_continues_identically(config: MonitorConfig) -> None:
    refs, score_ref = _references(seed=11)

    def stream() -> list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(12)
        out = []
        for i, (cols, scores, ts) in enumerate(_batches(rng, 40_000)):
            if i >= 17:
                cols["amount"] = cols["amount"] * 1.8
                cols["merchant_category"][:300] = "crypto_exchange"
            out.append((cols, scores, ts))
        return out

    data = stream()
    errors = np.random.default_rng(13).random(40_000) < np.linspace(0.05, 0.3, 40_000)

    def run(
        monitor: ModelMonitor, policy: AlertPolicy, part: range
    ) -> tuple[list[DriftSignal], list[DriftAlert]]:
        sigs_all: list[DriftSignal] = []
        alerts: list[DriftAlert] = []
        for i in part:
            cols, scores, ts = data[i]
            sigs = monitor.update(cols, scores, ts)
            windows = list(monitor.windows)
            sigs += monitor.update_errors(errors[i * 1000 : (i + 1) * 1000], ts)
            sigs_all += sigs
            alerts += policy.decide(sigs, model="m", version=2, windows=windows, now=_NOW)
        return sigs_all, alerts

    whole_signals, whole_alerts = run(
        ModelMonitor(refs, score_ref, config), AlertPolicy(cooldown_seconds=5), range(40)
    )

    monitor, policy = ModelMonitor(refs, score_ref, config), AlertPolicy(cooldown_seconds=5)
    first_signals, first_alerts = run(monitor, policy, range(23))
    blob = json.dumps({"monitor": monitor.state(), "policy": policy.state()}, allow_nan=False)
    restored = json.loads(blob)
    monitor2 = ModelMonitor.from_state(restored["monitor"])
    policy2 = AlertPolicy.from_state(restored["policy"])
    rest_signals, rest_alerts = run(monitor2, policy2, range(23, 40))

    assert whole_signals and whole_alerts
    assert [s.model_dump() for s in first_signals + rest_signals] == [s.model_dump() for s in whole_signals]
    assert [a.model_dump() for a in first_alerts + rest_alerts] == [a.model_dump() for a in whole_alerts]
    assert any(s.detector == "error_rate" for s in whole_signals)


def test_state_without_references_is_small_and_needs_them() -> None:
    refs, score_ref = _references(seed=1, categorical=False)
    monitor = ModelMonitor(refs, score_ref)
    for cols, scores, ts in _batches(np.random.default_rng(0), 3000, categorical=False):
        monitor.update(cols, scores, ts)
    slim = json.dumps(monitor.state(include_reference=False))
    assert len(slim) < len(json.dumps(monitor.state())) / 2
    with pytest.raises(ValueError, match="reference"):
        ModelMonitor.from_state(json.loads(slim))
    again = ModelMonitor.from_state(json.loads(slim), refs, score_ref)
    assert again.features["amount"].psi.windower.n_seen == 3000


_NOW = __import__("datetime").datetime(2026, 1, 1, tzinfo=__import__("datetime").UTC)
