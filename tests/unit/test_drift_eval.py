"""The drift evaluation harness (benchmarks/drift_eval.py) in a tiny configuration: its measures add up."""

from __future__ import annotations

import math

from benchmarks import drift_eval as ev

SCENARIO = {sc.name: i for i, sc in enumerate(ev.SCENARIOS)}


def test_delay_false_alarms_and_misses() -> None:
    assert ev.detection_delay([3000, 45_000, 47_000], change=44_500, tolerance=20_000) == 500.0
    assert math.isinf(ev.detection_delay([3000, 70_000], change=44_500, tolerance=20_000))
    alarms = {name: ev.Alarms(all=[3000, 44_000, 45_000], errors=[45_000]) for name in ev.DETECTORS}
    hit = ev.RunResult("x", 0, 65_000, 44_500, alarms, {}, (0.1, 0.1))
    miss = ev.RunResult("x", 1, 65_000, 50_000, alarms, {}, (0.1, 0.1))
    m = ev.measure([hit, miss], ev.DRIFTLINE, "abrupt", 20_000)
    assert (m.false_alarms, m.no_drift_events, m.delays) == (2 + 3, 94_500, [500.0, math.inf])
    assert m.mtfa == 94_500 / 5 and m.missed == 0.5 and m.mean_delay == 500.0 and math.isinf(m.median_delay)


def test_tiny_run_detects_a_one_sd_shift_and_the_sanity_baseline_is_exact() -> None:
    s = ev.Settings(
        seeds=1, control_events=20_000, tolerance=10_000, window_size=2000, adwin_features=False, period=5000
    )
    control = ev.run_one(ev.Task(SCENARIO["control"], 0, s))
    assert control.alarms[ev.ALWAYS].all == [5000, 10_000, 15_000, 20_000]
    assert control.alarms[ev.DRIFTLINE].all == []
    shift = ev.run_one(ev.Task(SCENARIO["abrupt 1sd"], 0, s))
    assert shift.change is not None and ev.CHANGE_FROM <= shift.change < ev.CHANGE_FROM + ev.CHANGE_SPREAD
    for detector in (ev.DRIFTLINE, ev.ADWIN_RAW):
        m = ev.measure([shift], detector, "abrupt", s.tolerance)
        assert m.false_alarms == 0 and m.delays is not None and m.delays[0] <= 5000, detector
