"""CUSUM: the vectorised recursion, its calibration to a budget, detection, checkpoints, odd values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detectors.cusum import CusumDetector, CusumJob, ErrorCusum, _Bank, siegmund_threshold, tilt, update_many
from detectors.reference import Reference
from detectors.signals import DriftSignal
from tests.unit.test_detectors_monitor import ODD_VALUES


def _feed(det: CusumDetector | ErrorCusum, x: np.ndarray, batch: int = 1000) -> list[DriftSignal]:
    out: list[DriftSignal] = []
    for i in range(0, x.size, batch):
        part = x[i : i + batch]
        out += det.update(part, np.arange(i, i + part.size, dtype=np.float64))
    return out


def _loop(
    a: np.ndarray, k: np.ndarray, h: np.ndarray, side: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Plain per-event reference: S = max(0, S + a y - k); an alarm resets its side."""
    s = np.zeros(a.size)
    trace: list[np.ndarray] = []
    alarms: list[tuple[int, int]] = []
    for t, v in enumerate(y.tolist()):
        s = np.maximum(0.0, s + a * v - k)
        fired = np.flatnonzero(s >= h)
        for sd in sorted({int(side[r]) for r in fired}):
            alarms.append((t, sd))
            s[side == sd] = 0.0
        trace.append(s.copy())
    return np.array(trace), alarms


def test_vectorised_recursion_equals_the_per_event_loop() -> None:
    rng = np.random.default_rng(0)
    y = np.concatenate(
        [rng.standard_normal(3000), rng.standard_normal(2000) + 0.8, rng.standard_normal(1000)]
    )
    a = np.array([1.0, 1.0, -1.0, -1.0])
    k = np.array([0.125, 0.375, 0.125, 0.375])
    h = np.array([8.0, 5.0, 8.0, 5.0])
    side = np.array([0, 0, 1, 1])
    trace, expected = _loop(a, k, h, side, y)
    bank = _Bank(a, k, h, side, 2)
    got: list[tuple[int, int]] = []
    states: list[tuple[int, np.ndarray]] = []
    for i in range(0, y.size, 700):  # batches that do not line up with anything
        got += [
            (al["end_index"] - 1, al["side"])
            for al in bank.feed(y[i : i + 700], np.arange(i, i + 700), np.arange(i, i + 700.0))
        ]
        states.append((min(i + 700, y.size) - 1, bank.s.copy()))
    assert got == expected and len(expected) > 5
    for t, s in states:
        assert np.max(np.abs(s - trace[t])) < 1e-9


def test_siegmund_threshold_and_tilt() -> None:
    rng = np.random.default_rng(1)
    assert tilt(rng.standard_normal(400_000), 1.0, 0.125) == pytest.approx(0.25, abs=0.01)
    h1, h2 = siegmund_threshold(1e6, 0.25, 0.125), siegmund_threshold(1e8, 0.25, 0.125)
    assert h2 - h1 == pytest.approx(math.log(100) / 0.25, rel=0.02)  # log-linear in the budget
    # a skewed 0/1 flag gets a smaller tilt on its long side, hence a higher threshold
    flag = np.where(rng.random(100_000) < 0.9, 1.0, 0.0)
    y = (flag - flag.mean()) / flag.std()
    assert tilt(y, -1.0, 0.125) < 0.23


@pytest.mark.parametrize("kind", ["normal", "lognormal", "flag"])
def test_empirical_false_alarm_rate_is_within_the_budget(kind: str) -> None:
    """A budget of one false alarm per 20,000 events, checked on 2,000,000 no-drift events."""
    rng = np.random.default_rng(2)

    def draw(n: int) -> np.ndarray:
        if kind == "normal":
            return rng.standard_normal(n)
        if kind == "lognormal":
            return rng.lognormal(0.0, 1.5, n)
        return (rng.random(n) < 0.85).astype(float)

    det = CusumDetector("x", Reference.from_values(draw(5000)), ert_events=20_000, warning=0.0, rearm=0)
    alarms = 0
    n = 2_000_000
    for i in range(0, n, 10_000):
        alarms += len(det.update(draw(10_000), np.arange(i, i + 10_000.0)))
    assert 0 < alarms <= n / 20_000, alarms  # the budget allows 100 (the reference margin: fewer)


def test_error_cusum_false_alarm_rate_is_within_the_budget() -> None:
    rng = np.random.default_rng(3)
    det = ErrorCusum(reference_error_rate=0.1, ert_events=20_000, warning=0.0, rearm=0)
    errors = (rng.random(2_000_000) < 0.1).astype(float)
    assert 0 < len(_feed(det, errors, 10_000)) <= 100


def test_half_sigma_shift_is_detected_quickly_with_a_strict_budget() -> None:
    rng = np.random.default_rng(4)
    det = CusumDetector("x", Reference.from_values(rng.normal(5.0, 2.0, 5000)), ert_events=1e9)
    x = np.concatenate([rng.normal(5.0, 2.0, 200_000), rng.normal(6.0, 2.0, 20_000)])
    signals = _feed(det, x)
    assert [s.severity for s in signals] == ["critical"]  # one signal per change (latched)
    s = signals[0]
    assert 200_000 < s.window_end_index < 201_500  # 0.5 sd found within 1,500 events
    assert s.effect_size == pytest.approx(0.5, abs=0.25) and s.statistic >= s.threshold
    assert 199_000 < s.window_start_index <= s.window_end_index


def test_concept_drift_on_errors_and_a_drop_raises_nothing() -> None:
    rng = np.random.default_rng(5)
    up = ErrorCusum(reference_error_rate=0.1, ert_events=1e9)
    signals = _feed(up, np.concatenate([rng.random(100_000) < 0.1, rng.random(10_000) < 0.3]).astype(float))
    assert [(s.feature, s.detector, s.severity) for s in signals] == [("__error__", "cusum", "critical")]
    assert 100_000 < signals[0].window_end_index < 100_500
    down = ErrorCusum(reference_error_rate=0.1, ert_events=1e9)
    assert _feed(down, (rng.random(100_000) < 0.05).astype(float)) == []


def test_error_cusum_without_reference_learns_p0_from_a_burn_in() -> None:
    rng = np.random.default_rng(6)
    det = ErrorCusum(burn_in=5000, ert_events=1e9)
    assert _feed(det, (rng.random(50_000) < 0.2).astype(float)) == []
    assert det.p0 == pytest.approx(0.2, abs=0.02)
    assert [s.severity for s in _feed(det, (rng.random(5000) < 0.4).astype(float))] == ["critical"]


@pytest.mark.parametrize("split", [1, 17, 31, 45])
def test_checkpoint_mid_stream_gives_the_same_signals(split: int) -> None:
    rng = np.random.default_rng(7)
    ref = Reference.from_values(rng.gamma(2.0, 3.0, 5000))
    x = np.concatenate(
        [rng.gamma(2.0, 3.0, 30_000), rng.gamma(2.0, 3.6, 10_000), rng.gamma(2.0, 3.0, 20_000)]
    )
    errors = (rng.random(60_000) < np.linspace(0.1, 0.3, 60_000)).astype(float)
    make = [lambda: CusumDetector("g", ref, ert_events=1e7), lambda: ErrorCusum(burn_in=3000, ert_events=1e7)]
    for build, data in zip(make, (x, errors), strict=True):
        whole = build()
        expected = [
            whole.update(data[i : i + 1000], np.arange(i, i + 1000.0)) for i in range(0, 60_000, 1000)
        ]
        first = build()
        got = [
            first.update(data[i : i + 1000], np.arange(i, i + 1000.0)) for i in range(0, split * 1000, 1000)
        ]
        blob = json.dumps(first.state(), allow_nan=False)
        again = (
            CusumDetector.from_state(json.loads(blob))
            if isinstance(first, CusumDetector)
            else ErrorCusum.from_state(json.loads(blob))
        )
        got += [
            again.update(data[i : i + 1000], np.arange(i, i + 1000.0))
            for i in range(split * 1000, 60_000, 1000)
        ]
        assert [[s.model_dump() for s in b] for b in got] == [[s.model_dump() for s in b] for b in expected]
        assert any(expected)


def test_state_without_reference_needs_it() -> None:
    ref = Reference.from_values(np.random.default_rng(8).normal(size=1000))
    det = CusumDetector("x", ref)
    slim = json.loads(json.dumps(det.state(include_reference=False)))
    with pytest.raises(ValueError, match="reference"):
        CusumDetector.from_state(slim)
    assert CusumDetector.from_state(slim, ref).thresholds == det.thresholds


@pytest.mark.parametrize("values", ODD_VALUES)
def test_odd_values_never_crash(values: np.ndarray) -> None:
    rng = np.random.default_rng(9)
    dets = [
        CusumDetector("x", Reference.from_values(rng.normal(size=1000)), ert_events=1e4),
        CusumDetector("c", Reference(kind="numeric", sample=[1.0] * 10, count=10)),  # constant: inert
        ErrorCusum(reference_error_rate=0.0),
        ErrorCusum(burn_in=10),
    ]
    ts = np.arange(values.size, dtype=float)
    for det in dets:
        for _ in range(3):
            for s in det.update(values, ts):
                assert s.severity in ("warning", "critical")
        json.dumps(det.state(), allow_nan=False)
    with pytest.raises(ValueError, match="timestamps"):
        dets[0].update(np.zeros(3), np.zeros(2))


def test_a_signal_carries_the_partition_and_offsets_of_its_run_across_a_checkpoint() -> None:
    rng = np.random.default_rng(11)
    ref = Reference.from_values(rng.normal(size=5000))
    x = np.concatenate([rng.normal(size=50_000), rng.normal(1.0, 1.0, 5_000)])
    x[::97] = np.nan  # skipped, so offsets and value indices differ
    offsets = 7_000 + 2 * np.arange(x.size)  # gaps, as transaction markers leave in a partition
    det, signals = CusumDetector("x", ref, ert_events=1e8), []
    for i in range(0, x.size, 1000):
        if i == 50_000:  # checkpoint just as the shift starts: the run's start survives it
            det = CusumDetector.from_state(json.loads(json.dumps(det.state())), reference=ref)
        signals += det.update(x[i : i + 1000], np.arange(i, i + 1000.0), offsets[i : i + 1000], partition=3)
    assert signals and all(s.partition == 3 for s in signals)
    first, last = signals[0].window_offsets[3]
    assert offsets[0] <= first <= last <= offsets[-1] and first % 2 == 0 and last % 2 == 0
    # The offsets bound the same events as the signal's event times (ts = position here).
    assert (first - 7_000) // 2 == signals[0].window_start_ts
    assert (last - 7_000) // 2 == signals[0].window_end_ts


def _small_budget(name: str, ref: Reference) -> CusumDetector:
    return CusumDetector(name, ref, ert_events=1e5, rearm=500)


def test_update_many_is_update_of_each_bit_for_bit() -> None:
    """The stacked pass gives each detector exactly what its own updates give: signals and state,
    across batches, with missing and odd values, uneven lengths, and alarms (shifted streams)."""
    rng = np.random.default_rng(11)
    refs = [
        Reference.from_values(rng.lognormal(0.0, 1.0, 3000)),
        Reference.from_values(rng.normal(size=3000)),
    ]
    pairs = [(_small_budget(f"f{i}", refs[i % 2]), _small_budget(f"f{i}", refs[i % 2])) for i in range(8)]
    for b in range(12):
        jobs, singles = [], []
        for i, (many, one) in enumerate(pairs):
            m = int(rng.integers(0, 300))
            shift = 0.8 if (i % 3 == 0 and b >= 4) else 0.0  # some streams drift, so some batches alarm
            x = (rng.lognormal(shift, 1.0, m) if i % 2 == 0 else rng.normal(shift, 1.0, m)).astype(object)
            x[rng.random(m) < 0.05] = None
            if m > 3:
                x[1], x[2] = float("inf"), "n/a"
            ts = np.sort(rng.uniform(b * 100.0, (b + 1) * 100.0, m))
            offs = np.arange(b * 1000, b * 1000 + m, dtype=np.int64)
            jobs.append(CusumJob(many, many.standardised(x), ts, offs, partition=i))
            singles.append(one.update(x, ts, offsets=offs, partition=i))
        for got, want, (many, one) in zip(update_many(jobs), singles, pairs, strict=True):
            assert [s.model_dump() for s in got] == [s.model_dump() for s in want]
            assert many.windows == one.windows
            assert json.dumps(many.state(), sort_keys=True) == json.dumps(one.state(), sort_keys=True)
    assert any(p[1].n_seen for p in pairs)
    alarms = sum(p[1]._bank is not None and p[1]._bank.latch != [0, 0] for p in pairs)
    assert alarms > 0  # the alarm path was exercised
