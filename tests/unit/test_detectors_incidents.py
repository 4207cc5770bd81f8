"""The incident book: one change, one incident that opens, gathers evidence, escalates and resolves."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from detectors.incidents import (
    DriftIncident,
    IncidentBook,
    IncidentConfig,
    IncidentEvent,
    incident_id,
    parse_output,
    split_outputs,
    summarize,
)
from detectors.signals import ERROR_FEATURE, SCORE_FEATURE, DriftSignal, Severity, WindowStat

W = 300.0
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def sig(feature: str, end: float, detector: str = "psi", severity: Severity = "critical", stat: float = 0.4,
        threshold: float = 0.2, partition: int | None = None) -> DriftSignal:  # fmt: skip
    return DriftSignal(
        detector=detector,
        feature=feature,
        statistic=stat,
        threshold=threshold,
        effect_size=stat,
        severity=severity,
        window_start_ts=end - W,
        window_end_ts=end,
        window_start_index=0,
        window_end_index=int(end),
        n_window=1000,
        n_reference=5000,
        message=f"{feature}: {detector} {stat}",
        partition=partition,
        window_offsets={0: (int(end), int(end) + 10)},
    )


def stat(feature: str, end: float, value: float, detector: str = "psi", threshold: float = 0.2) -> WindowStat:
    return WindowStat(
        detector=detector,
        feature=feature,
        statistic=value,
        threshold=threshold,
        window_end_ts=end,
        window_end_index=int(end),
        n_window=1000,
    )


def book(**kw: float) -> IncidentBook:
    return IncidentBook(IncidentConfig(window_seconds=W, **kw))


def kinds(events: list[IncidentEvent]) -> list[str]:
    return [e.kind for e in events]


def test_a_lasting_drift_is_one_incident_that_resolves_after_it_stops() -> None:
    b = book(resolve_windows=3, update_interval_seconds=1800)
    events: list[IncidentEvent] = []
    features = ["amount", "distance", "merchant_risk"]
    for k in range(1, 21):  # 20 drifted windows: every feature's PSI and KS, per window
        end = k * W
        signals = [sig(f, end, d) for f in features[: 1 + k // 5] for d in ("psi", "ks")]
        signals += [sig(SCORE_FEATURE, end, "adwin", partition=p) for p in range(6)] if k == 2 else []
        windows = [s.stat() for s in signals]
        events += b.observe(signals, model="m", version=1, windows=windows, now=NOW)
    assert kinds(events)[0] == "opened" and "resolved" not in kinds(events)
    assert 1 <= kinds(events).count("updated") <= 4  # new features and a new detector, rate-limited
    inc = b.open
    assert inc is not None and inc.severity == "critical"
    assert {f.feature for f in inc.features} == {*features, SCORE_FEATURE}
    amount = inc.feature("amount")
    assert amount is not None and amount.detectors == ["ks", "psi"] and amount.signals == 40
    assert inc.first_window.start_ts == 0.0 and inc.latest_window.end_ts == 20 * W
    for k in range(21, 26):  # back to normal
        calm = [stat(f, k * W, 0.01, d) for f in features for d in ("psi", "ks")]
        events += b.observe([], model="m", version=1, windows=calm, now=NOW)
    assert kinds(events).count("resolved") == 1 and kinds(events)[-1] == "resolved"
    assert kinds(events).count("opened") == 1
    last = events[-1]
    assert last.incident.state == "resolved" and last.incident.resolution == "quiet"
    assert last.incident.resolved_ts == 23 * W  # three quiet windows after the last signal at 20 W
    assert len({e.id for e in events}) == len(events) and {e.incident_id for e in events} == {inc.id}
    assert [e.incident.revision for e in events] == list(range(1, len(events) + 1))


def test_a_statistic_between_the_hysteresis_and_the_threshold_keeps_it_open() -> None:
    b = book(resolve_windows=2)
    b.observe([sig("amount", W)], model="m", version=1, now=NOW)
    for k in range(2, 10):  # 0.17: under the threshold 0.2, above 0.2 * 0.8
        assert b.observe([], model="m", version=1, windows=[stat("amount", k * W, 0.17)], now=NOW) == []
    assert b.open is not None
    assert b.observe([], model="m", version=1, windows=[stat("amount", 10 * W, 0.1)], now=NOW) == []
    ev = b.observe([], model="m", version=1, windows=[stat("amount", 11 * W, 0.1)], now=NOW)
    assert kinds(ev) == ["resolved"]  # two windows in a row under the hysteresis


def test_a_windowed_member_resolves_by_windows_not_time() -> None:
    """A low-rate stream's merged windows span days: time alone must not resolve a PSI member."""
    b = book(resolve_windows=2)
    b.observe([sig("amount", W)], model="m", version=1, now=NOW)
    # Event time moves on (another detector's signal, a day later) but no amount window closed.
    b.observe([sig("other", 300 * W, "adwin")], model="m", version=1, now=NOW)
    assert b.observe([], model="m", version=1, windows=[stat("other", 600 * W, 0.0, "psi")], now=NOW) == []
    assert b.open is not None
    calm = [stat("amount", k * W, 0.0) for k in (601, 602)]
    assert kinds(b.observe([], model="m", version=1, windows=calm, now=NOW)) == ["resolved"]


def test_warnings_open_only_when_enough_of_them_come_and_severity_never_goes_down() -> None:
    b = book(open_warnings=3, warning_window_seconds=1000)
    assert b.observe([sig("a", W, severity="warning")], model="m", version=1, now=NOW) == []
    # The second warning comes too late to count with the first.
    assert b.observe([sig("a", 5 * W, severity="warning")], model="m", version=1, now=NOW) == []
    assert b.observe([sig("b", 6 * W, severity="warning")], model="m", version=1, now=NOW) == []
    opened = b.observe([sig("c", 7 * W, severity="warning")], model="m", version=1, now=NOW)
    assert kinds(opened) == ["opened"] and opened[0].severity == "warning"
    assert {f.feature for f in opened[0].incident.features} == {"a", "b", "c"}
    assert opened[0].incident.first_window.end_ts == 5 * W  # the first warning that counted
    up = b.observe([sig("a", 8 * W)], model="m", version=1, now=NOW)
    assert (
        kinds(up) == ["updated"] and up[0].severity == "critical" and "escalated to critical" in up[0].changes
    )
    b.observe([sig("a", 9 * W, severity="warning")], model="m", version=1, now=NOW)
    assert b.open is not None and b.open.severity == "critical"


def test_updates_are_rate_limited_and_repeats_change_nothing() -> None:
    b = book(update_interval_seconds=3000)
    b.observe([sig("a", W)], model="m", version=1, now=NOW)
    assert b.observe([sig("a", 2 * W), sig("a", 2 * W, "ks")], model="m", version=1, now=NOW) == []
    assert b.observe([sig("b", 3 * W)], model="m", version=1, now=NOW) == []  # held back
    later = b.observe([sig("a", 12 * W)], model="m", version=1, now=NOW)
    assert kinds(later) == ["updated"]
    assert later[0].changes == ["detector ks on a", "feature b (psi)"]
    assert b.observe([sig("a", 30 * W)], model="m", version=1, now=NOW) == []  # nothing material


def test_an_error_stream_incident_stays_open_until_superseded() -> None:
    b = book(resolve_windows=2)
    e = b.observe([sig(ERROR_FEATURE, W, "error_rate", stat=0.7)], model="m", version=1, now=NOW)
    assert kinds(e) == ["opened"] and e[0].summary.startswith("concept drift: error_rate 0.7 >= 0.2")
    # However long the error detectors stay silent (they signal once per change, on lagging
    # labels), the model is still the worse one: open ...
    assert b.observe([sig(ERROR_FEATURE, 2 * W, "error_rate")], model="m", version=1, now=NOW) == []
    calm = [stat("amount", k * W, 0.0) for k in range(3, 100)]
    assert b.observe([], model="m", version=1, windows=calm, now=NOW) == []
    assert b.open is not None
    gone = b.supersede(2, now=NOW)
    assert kinds(gone) == ["resolved"] and gone[0].incident.resolution == "superseded"
    assert gone[0].incident.superseded_by == 2 and b.open is None and b.supersede(3) == []
    # ... and a later change is a new incident.
    again = b.observe([sig("a", 10 * W)], model="m", version=1, now=NOW)
    assert kinds(again) == ["opened"] and again[0].incident_id != e[0].incident_id


def test_state_round_trips_and_gives_the_same_decisions() -> None:
    a = book(resolve_windows=3, update_interval_seconds=600)
    a.observe([sig("x", W, severity="warning")], model="m", version=2, now=NOW)
    a.observe([sig("x", 2 * W)], model="m", version=2, now=NOW)
    a.observe([sig("y", 3 * W, "ks")], model="m", version=2, now=NOW)
    b = IncidentBook.from_state(json.loads(json.dumps(a.state())))
    steps = [([sig("z", 6 * W)], [stat("x", 6 * W, 0.0)]), ([], [stat(f, 10 * W, 0.0) for f in "xyz"])]
    for signals, windows in steps:
        ea = a.observe(signals, model="m", version=2, windows=windows, now=NOW)
        eb = b.observe(signals, model="m", version=2, windows=windows, now=NOW)
        assert ea == eb
    assert a.state() == b.state()


def test_ids_are_deterministic_and_outputs_parse_back() -> None:
    first = book().observe([sig("a", W)], model="m", version=1, now=NOW)
    second = book().observe([sig("a", W)], model="m", version=1, now=NOW)
    assert first[0].id == second[0].id == f"{first[0].incident_id}:1"
    assert first[0].incident_id == incident_id("m", 1, first[0].incident.alert_ids[0])
    event = parse_output(json.loads(first[0].model_dump_json()))
    assert event == first[0]
    alerts, events = split_outputs([event])
    assert alerts == [] and events == [event]
    assert isinstance(event, IncidentEvent) and isinstance(event.incident, DriftIncident)


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (
            [("amount", "psi"), (SCORE_FEATURE, "adwin")],
            "covariate drift on amount; score shifted (effect +0.4)",
        ),
        ([("amount", "missing_rate")], "more missing values in amount"),
    ],
)
def test_the_summary_says_what_changed(features: list[tuple[str, str]], expected: str) -> None:
    b = book()
    b.observe([sig(f, W, d) for f, d in features], model="m", version=1, now=NOW)
    assert b.open is not None and b.open.summary == f"{expected}; since 1970-01-01 00:00 event time"
    assert summarize(b.open.features, 0.0) == b.open.summary
