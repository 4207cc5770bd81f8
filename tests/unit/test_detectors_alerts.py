"""AlertPolicy: cooldown, hysteresis, escalation, per-feature grouping, dedup, checkpoint."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from detectors.alerts import AlertPolicy, DriftAlert, alert_id
from detectors.signals import DetectorName, DriftSignal, Severity, WindowStat

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _sig(
    end: float,
    stat: float = 0.5,
    feature: str = "amount",
    detector: DetectorName = "psi",
    severity: Severity = "critical",
    threshold: float = 0.2,
) -> DriftSignal:
    return DriftSignal(
        detector=detector,
        feature=feature,
        statistic=stat,
        threshold=threshold,
        severity=severity,
        window_start_ts=end - 60.0,
        window_end_ts=end,
        window_start_index=int(end - 60),
        window_end_index=int(end),
        n_window=5000,
        n_reference=5000,
        message=f"{feature}: {detector} {stat}",
    )


def _stat(end: float, stat: float, feature: str = "amount", detector: DetectorName = "psi") -> WindowStat:
    return WindowStat(
        detector=detector,
        feature=feature,
        statistic=stat,
        threshold=0.1,
        window_end_ts=end,
        window_end_index=int(end),
        n_window=5000,
    )


def _decide(
    policy: AlertPolicy, signals: list[DriftSignal], windows: list[WindowStat] | None = None
) -> list[DriftAlert]:
    return policy.decide(signals, model="fraud", version=3, windows=windows or [], now=NOW)


def test_persistent_drift_gives_one_alert() -> None:
    policy = AlertPolicy(cooldown_seconds=120.0, hysteresis_ratio=0.5)
    alerts = [
        a for t in range(60, 3600, 60) for a in _decide(policy, [_sig(float(t))], [_stat(float(t), 0.5)])
    ]
    assert len(alerts) == 1
    assert alerts[0].id == alert_id("fraud", 3, "psi", "amount", 0.0, 60.0, 0, 60)


def test_hysteresis_rearms_only_below_threshold_times_ratio() -> None:
    policy = AlertPolicy(cooldown_seconds=60.0, hysteresis_ratio=0.5)
    assert len(_decide(policy, [_sig(60.0)])) == 1
    # dips to 0.15 (< threshold 0.2 but not < 0.2 * 0.5): still disarmed
    assert _decide(policy, [], [_stat(180.0, 0.15)]) == []
    assert _decide(policy, [_sig(240.0)]) == []
    # back to normal: re-armed; a new drift after the cooldown alerts again
    assert _decide(policy, [], [_stat(300.0, 0.05)]) == []
    assert len(_decide(policy, [_sig(360.0)])) == 1


def test_cooldown_holds_even_when_rearmed() -> None:
    policy = AlertPolicy(cooldown_seconds=600.0, hysteresis_ratio=0.5)
    assert len(_decide(policy, [_sig(60.0)])) == 1
    _decide(policy, [], [_stat(120.0, 0.01)])
    assert _decide(policy, [_sig(180.0)]) == []
    assert len(_decide(policy, [_sig(700.0)])) == 1


def test_escalation_from_warning_to_critical_alerts_once() -> None:
    policy = AlertPolicy(cooldown_seconds=3600.0)
    first = _decide(policy, [_sig(60.0, 0.15, severity="warning", threshold=0.1)])
    second = _decide(policy, [_sig(120.0, 0.5)])
    third = _decide(policy, [_sig(180.0, 0.6)])
    assert [a.severity for a in first + second + third] == ["warning", "critical"]


def test_detectors_of_one_feature_fold_into_one_alert() -> None:
    policy = AlertPolicy(cooldown_seconds=3600.0)
    signals = [
        _sig(60.0, 0.22, detector="ks", threshold=0.03),
        _sig(60.0, 0.9),
        _sig(60.0, 0.3, detector="missing_rate", severity="warning", threshold=0.03),
        _sig(60.0, 0.4, feature="country"),
    ]
    alerts = _decide(policy, signals)
    assert [(a.feature, a.detector) for a in alerts] == [("amount", "ks"), ("country", "psi")]
    assert alerts[0].corroborated_by == ["psi", "missing_rate"]
    # the folded detectors are disarmed too: no alert from them once the cooldown is over
    later = _decide(policy, [_sig(5000.0, 0.9), _sig(5000.0, 0.2, detector="ks", threshold=0.03)])
    assert later == []


def test_change_point_detectors_have_no_hysteresis() -> None:
    policy = AlertPolicy(cooldown_seconds=100.0, group_by_feature=False)
    first = _decide(policy, [_sig(60.0, 0.7, detector="adwin", threshold=0.5)])
    again = _decide(policy, [_sig(500.0, 0.7, detector="adwin", threshold=0.5)])
    assert len(first) == len(again) == 1


def test_duplicate_signals_are_dropped() -> None:
    # adwin: no hysteresis, and no cooldown here, so only the id dedup can drop a repeat
    policy = AlertPolicy(cooldown_seconds=0.0)
    sig = _sig(60.0, 0.7, detector="adwin", threshold=0.5)
    assert len(_decide(policy, [sig])) == 1
    assert _decide(policy, [sig]) == []  # the same window again (a replayed batch)
    restored = AlertPolicy.from_state(json.loads(json.dumps(policy.state())))
    assert restored.decide([sig], model="fraud", version=3) == []
    assert (
        len(restored.decide([_sig(120.0, 0.7, detector="adwin", threshold=0.5)], model="fraud", version=3))
        == 1
    )


def test_state_round_trip_continues_identically() -> None:
    stream = [
        ([_sig(60.0)], [_stat(60.0, 0.5)]),
        ([], [_stat(120.0, 0.01)]),
        ([_sig(180.0, 0.3, severity="warning", threshold=0.1, feature="x")], []),
        ([_sig(4000.0)], [_stat(4000.0, 0.5)]),
        ([_sig(4060.0, 0.25, feature="x")], []),
    ]
    whole = AlertPolicy(cooldown_seconds=1000.0)
    expected = [a for s, w in stream for a in _decide(whole, s, w)]
    first = AlertPolicy(cooldown_seconds=1000.0)
    got = [a for s, w in stream[:2] for a in _decide(first, s, w)]
    second = AlertPolicy.from_state(json.loads(json.dumps(first.state(), allow_nan=False)))
    got += [a for s, w in stream[2:] for a in _decide(second, s, w)]
    assert [a.model_dump() for a in got] == [a.model_dump() for a in expected]
    assert len(expected) == 4


def test_alert_carries_the_signal() -> None:
    (alert,) = _decide(AlertPolicy(), [_sig(60.0, 0.7)])
    assert (alert.model, alert.version, alert.feature, alert.detector, alert.statistic) == (
        "fraud",
        3,
        "amount",
        "psi",
        0.7,
    )
    assert (alert.window_start_ts, alert.window_end_ts, alert.n_window, alert.ts) == (0.0, 60.0, 5000, NOW)
    assert DriftAlert.model_validate_json(alert.model_dump_json()) == alert


def test_alert_carries_offsets_and_old_payloads_still_parse() -> None:
    sig = _sig(60.0, 0.7).model_copy(update={"partition": 2, "window_offsets": {2: (10, 99)}})
    (alert,) = _decide(AlertPolicy(), [sig])
    assert (alert.partition, alert.window_offsets) == (2, {2: (10, 99)})
    payload = alert.model_dump_json()
    assert '"window_offsets":{"2":[10,99]}' in payload
    assert DriftAlert.model_validate_json(payload) == alert
    old = json.loads(payload)
    del old["partition"], old["window_offsets"]
    parsed = DriftAlert.model_validate(old)
    assert (parsed.partition, parsed.window_offsets, parsed.id) == (None, {}, alert.id)
