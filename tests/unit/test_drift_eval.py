"""The drift evaluation harness (benchmarks/drift_eval.py) in tiny configurations: its measures add up."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import river.drift.kswin
from river.drift import KSWIN
from scipy import stats

from benchmarks import drift_eval as ev
from detectors import ERROR_FEATURE

SCENARIO = {sc.name: i for i, sc in enumerate(ev.SCENARIOS)}


def test_delay_false_alarms_and_misses() -> None:
    assert ev.detection_delay([3000, 45_000, 47_000], change=44_500, tolerance=20_000) == 500.0
    assert math.isinf(ev.detection_delay([3000, 70_000], change=44_500, tolerance=20_000))
    alarms = {name: ev.Alarms(all=[3000, 44_000, 45_000], errors=[45_000]) for name in [ev.DRIFTLINE]}
    hit = ev.RunResult("x", 0, 65_000, 44_500, alarms, {}, (0.1, 0.1))
    miss = ev.RunResult("x", 1, 65_000, 50_000, alarms, {}, (0.1, 0.1))
    m = ev.measure([hit, miss], ev.DRIFTLINE, "abrupt", 20_000)
    assert (m.false_alarms, m.no_drift_events, m.delays) == (2 + 3, 94_500, [500.0, math.inf])
    assert m.mtfa == 94_500 / 5 and m.missed == 0.5 and m.mean_delay == 500.0 and math.isinf(m.median_delay)


def test_incident_measures_count_openings_per_change_false_ones_and_warm_up() -> None:
    one = ev.Alarms(opened=[15_000, 46_000], opened_errors=[46_000])
    two = ev.Alarms(opened=[47_000, 60_000], opened_errors=[60_000])
    runs = [
        ev.RunResult("x", 0, 65_000, 45_000, {"m": one}, {}, (0.1, 0.4)),
        ev.RunResult("x", 1, 65_000, 45_000, {"m": two}, {}, (0.1, 0.4)),
    ]
    m = ev.measure(runs, "m", "abrupt", 20_000, warmup=20_000)
    assert m.incidents == [1, 2] and ev.distribution(m.incidents) == "1 x1, 2 x1"
    assert (m.false_incidents, m.warmup_incidents, m.incident_delays) == (1, 1, [1000.0, 2000.0])
    concept = ev.measure(runs, "m", "concept", 20_000)  # only incidents naming the error stream
    assert concept.incident_delays == [1000.0, 15_000.0]
    # Fed only part of a control: its false alarms are per event seen, and no incident measures.
    part = ev.Alarms(all=[3000], fed_from=0, fed_to=50_000, incidents=False)
    c = ev.measure(
        [ev.RunResult("control", 0, 300_000, None, {"m": part}, {}, (0.1, 0.0))], "m", "control", 1
    )
    assert (c.no_drift_events, c.fa_per_million, c.false_incidents, c.incidents) == (50_000, 20.0, None, None)


def _control(false_alarms: int, events: int = 1_000_000) -> ev.Measures:
    return ev.Measures(1, events, false_alarms, None)


def test_matched_budget_is_the_noisiest_grid_point_not_above_the_baseline() -> None:
    grid = (ev.Budget(1e5), ev.Budget(1e4), ev.Budget(1e4, 1000), ev.Budget(1e3))
    s = ev.Settings(1, 1000, 1000, 2000, False, 5000, cusum_ert=1e8, budgets=grid, baselines=("a", "b", "c"))
    control: dict[str, ev.Measures | None] = {
        ev.DRIFTLINE: _control(0),
        ev.grid_name(grid[0]): _control(0),
        ev.grid_name(grid[1]): _control(3),
        ev.grid_name(grid[2]): _control(3),  # as noisy, more sensitive (shorter re-arm)
        ev.grid_name(grid[3]): _control(40),
        "a": _control(0),  # a quiet baseline: the most sensitive zero-alarm point
        "b": _control(10),
        "c": _control(1000),
    }
    got = {m.baseline: (m.budget, m.exceeds) for m in ev.matches({"control": control}, s)}
    assert got == {"a": (grid[0], False), "b": (grid[2], False), "c": (grid[3], False)}
    control[ev.DRIFTLINE] = control[ev.grid_name(grid[0])] = _control(5)
    quietest = ev.Match("a", ev.grid_name(grid[2]), grid[2], True)  # ties: the more sensitive
    assert ev.matches({"control": control}, s)[0] == quietest


def test_cached_ks_returns_scipys_statistic_and_p_value() -> None:
    rng = np.random.default_rng(0)
    cached = ev.CachedKs()
    for n1, n2, binary in [(30, 30, False), (30, 30, True), (20, 45, False), (7, 13, True), (30, 30, False)]:
        for _ in range(40):
            if binary:
                a, b = (rng.random(n1) < 0.3).astype(float), (rng.random(n2) < 0.5).astype(float)
            else:
                a, b = rng.normal(size=n1).round(1), rng.normal(0.4, size=n2).round(1)  # ties too
            want = stats.ks_2samp(a.tolist(), b.tolist(), method="auto")
            assert cached.ks_2samp(a.tolist(), b.tolist()) == (want.statistic, want.pvalue)


def test_kswin_decides_the_same_with_the_cached_test(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(size=800), rng.normal(0.8, size=400)]).tolist()

    def run() -> list[tuple[bool, Any]]:
        det = KSWIN(seed=3)
        out = []
        for v in values:
            det.update(v)
            out.append((det.drift_detected, det.p_value))
        return out

    plain = run()
    monkeypatch.setattr(river.drift.kswin, "stats", ev.CachedKs())
    assert run() == plain and any(d for d, _ in plain)


def test_ks_baseline_is_corrected_across_features(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = ev.reference_data(0)
    b = ev.generate(ev.CONTROL, np.random.default_rng(5), 0, ev.BASELINE_WINDOW, math.inf)

    def with_p(p: list[float]) -> list[str]:
        it = iter(p)
        monkeypatch.setattr(ev.stats, "ks_2samp", lambda *a, **k: SimpleNamespace(pvalue=next(it)))
        signals, windows = ev.KsBhSource(ref).update(b)
        assert len(windows) == ev.N_NUMERIC
        return [s.feature for s in signals]

    assert with_p([0.01] + [0.5] * 11) == []  # p < 0.05 uncorrected, not with 12 features
    assert with_p([1e-5, 0.004] + [0.5] * 10) == ["x00", "x01"]  # 0.004 <= 0.05 * 2 / 12


class _FiresAt(ev.Source):
    def __init__(self, at: set[int]) -> None:
        self.at, self.fed = at, 0

    def update(self, b: ev.Batch) -> ev.Signals:
        self.fed += 1
        if b.end not in self.at:
            return [], []
        return [ev.point_signal("adwin", ERROR_FEATURE, b.end - 1, "x")], []


def test_method_goes_through_policy_and_book_and_stops_after_its_detection() -> None:
    s = ev.Settings(1, 1000, 1000, 2000, False, 5000)
    rng = np.random.default_rng(0)
    stream = list(ev.batches(ev.CONTROL, rng, 20_000, math.inf))
    src = _FiresAt({3000, 5000, 12_000, 13_000})
    m = ev.Method("m", src, s, start=2000, stop_after=11_500, errors_only=True)
    for b in stream:
        m.update(b)
    # 5000 is inside the policy's cooldown (3600 events); feeding stops after the alarm at 12,000.
    assert (m.alarms.all, m.alarms.errors, m.alarms.opened) == ([3000, 12_000], [3000, 12_000], [3000])
    assert (src.fed, m.alarms.fed_from, m.alarms.fed_to, m.alarms.incidents) == (10, 2000, 12_000, False)


def test_tiny_run_detects_a_one_sd_shift_and_the_sanity_baseline_is_exact() -> None:
    s = ev.Settings(
        seeds=1, control_events=20_000, tolerance=10_000, window_size=2000, adwin_features=False, period=5000,
        budgets=(), baselines=(ev.ADWIN_RAW, ev.KS_BH),
    )  # fmt: skip
    control = ev.run_one(ev.Task(SCENARIO["control"], 0, s))
    assert control.alarms[ev.ALWAYS].all == [5000, 10_000, 15_000, 20_000]
    assert control.alarms[ev.DRIFTLINE].all == [] and control.alarms[ev.DRIFTLINE].opened == []
    shift = ev.run_one(ev.Task(SCENARIO["abrupt 1sd"], 0, s))
    assert shift.change is not None and ev.CHANGE_FROM <= shift.change < ev.CHANGE_FROM + ev.CHANGE_SPREAD
    for method in (ev.DRIFTLINE, ev.ADWIN_RAW):
        m = ev.measure([shift], method, "abrupt", s.tolerance)
        assert m.false_alarms == 0 and m.delays is not None and m.delays[0] <= 5000, method
        assert m.incidents == [1] and m.false_incidents == 0, method
    results = {
        "abrupt 1sd": {n: ev.measure([shift], n, "abrupt", s.tolerance) for n in s.methods()},
        "control": {n: ev.measure([control], n, "control", s.tolerance) for n in s.methods()},
    }
    matched = ev.matches(results, s)  # type: ignore[arg-type]
    text = ev.table(results, s, matched)  # type: ignore[arg-type]
    lines = text.splitlines()
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines[:1] + lines[2:])
    assert sum(set(line) <= set("|-:") for line in lines) == 1  # one header: one table
    assert "| abrupt 1sd | driftline @ ks-bh-10k | ert=1e+08 |" in text


def test_flags() -> None:
    argv = ["--quick", "--budgets", "1e5,300:1000", "--baselines", "kswin,psi-10k"]
    s = ev.settings_from(ev.parse_args(argv))
    grid = (ev.Budget(1e5), ev.Budget(300.0, 1000))
    assert (s.seeds, s.control_events, s.budgets, s.baselines) == (3, 200_000, grid, ("kswin", "psi-10k"))
    assert s.grid == [ev.Budget(1e8), *grid]
    assert s.methods()[:3] == [ev.DRIFTLINE, "driftline ert=100000", "driftline ert=300 rearm=1000"]
    with pytest.raises(SystemExit):
        ev.settings_from(ev.parse_args(["--baselines", "ks-10k"]))
