"""ADWIN on features and scores, the error-rate detector, their checkpoints and their cost."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detectors.adwin import AdwinDetector, ErrorRateDetector, mid_ranks
from detectors.reference import Reference
from detectors.signals import DriftSignal


def _feed(det: AdwinDetector | ErrorRateDetector, x: np.ndarray, batch: int = 1000) -> list[DriftSignal]:
    out: list[DriftSignal] = []
    for i in range(0, x.size, batch):
        out += det.update(x[i : i + batch], np.arange(i, i + x[i : i + batch].size) / 100.0)
    return out


def test_detects_a_mean_shift_at_the_right_place() -> None:
    rng = np.random.default_rng(0)
    ref = Reference.from_values(rng.normal(10.0, 2.0, 5000))
    det = AdwinDetector("x", ref)
    x = np.concatenate([rng.normal(10.0, 2.0, 20_000), rng.normal(12.0, 2.0, 20_000)])
    signals = _feed(det, x)
    assert [s.severity for s in signals] == ["critical"]
    s = signals[0]
    assert 20_500 < s.window_end_index < 21_000  # the cut soon after 20,000, then 500 values to measure
    assert s.statistic == pytest.approx(0.9, abs=0.1)  # a 1-sigma shift, in rank std units
    assert s.window_start_index == 0 and s.window_start_ts == 0.0
    assert s.window_end_ts == pytest.approx((s.window_end_index - 1) / 100.0)
    assert s.effect_size is not None and s.effect_size > 0  # the mean rank went up


def test_heavy_tails_do_not_trigger_false_cuts() -> None:
    rng = np.random.default_rng(1)
    ref = Reference.from_values(rng.lognormal(3.5, 1.0, 5000))
    ranked = AdwinDetector("amount", ref)
    raw = AdwinDetector("amount", reference_std=ref.std())
    x = rng.lognormal(3.5, 1.0, 300_000)
    assert _feed(ranked, x) == []
    assert ranked.windows == []
    # fed raw values, ADWIN cuts on tail events even though nothing changed
    assert len(_feed(raw, x)) > 0


def test_nan_none_and_batches_without_values() -> None:
    det = AdwinDetector("x", reference_std=1.0)
    assert det.update(np.array([None, "x", float("nan")], dtype=object), np.arange(3.0)) == []
    assert det.update(np.empty(0), np.empty(0)) == []
    assert det.n_seen == 3
    with pytest.raises(ValueError, match="timestamps"):
        det.update(np.zeros(3), np.zeros(2))


def test_mid_ranks_are_uniform_under_the_reference() -> None:
    rng = np.random.default_rng(2)
    ref = np.sort(rng.normal(size=5000))
    u = mid_ranks(ref, rng.normal(size=100_000))
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 12**-0.5) < 0.01


def test_error_rate_detector_reports_increases_only() -> None:
    rng = np.random.default_rng(3)
    up = ErrorRateDetector()
    errors = np.concatenate([rng.random(30_000) < 0.05, rng.random(30_000) < 0.15])  # bool arrays work
    signals = _feed(up, errors)
    assert [(s.feature, s.detector, s.severity) for s in signals] == [("__error__", "error_rate", "critical")]
    assert signals[0].statistic > 0.05 and 30_000 < signals[0].window_end_index < 32_000
    down = ErrorRateDetector()
    assert _feed(down, np.concatenate([rng.random(30_000) < 0.15, rng.random(30_000) < 0.05])) == []
    unlabelled = np.where(rng.random(1000) < 0.5, np.nan, 1.0)
    assert ErrorRateDetector().update(unlabelled, np.arange(1000.0)) == []


@pytest.mark.parametrize("split", [1, 17_345, 20_001, 39_999])
def test_checkpoint_continues_identically(split: int) -> None:
    rng = np.random.default_rng(4)
    ref = Reference.from_values(rng.normal(size=5000))
    x = np.concatenate([rng.normal(size=20_000), rng.normal(1.0, 1.0, size=20_000), rng.normal(size=20_000)])
    ts = np.arange(x.size) / 100.0
    expected = AdwinDetector("x", ref).update(x, ts)
    first = AdwinDetector("x", ref)
    got = first.update(x[:split], ts[:split])
    blob = json.dumps(first.state(), allow_nan=False)
    second = AdwinDetector.from_state(json.loads(blob))
    got += second.update(x[split:], ts[split:])
    assert len(expected) >= 2 and got == expected

    errors = rng.random(60_000) < np.repeat([0.05, 0.2, 0.05], 20_000)
    whole = ErrorRateDetector().update(errors, ts)
    e1 = ErrorRateDetector()
    part = e1.update(errors[:split], ts[:split])
    part += ErrorRateDetector.from_state(json.loads(json.dumps(e1.state()))).update(
        errors[split:], ts[split:]
    )
    assert whole and part == whole


def test_error_rate_level_check_raises_critical_against_the_holdout_rate() -> None:
    rng = np.random.default_rng(3)
    before = (rng.random(3000) < 0.05).astype(float)
    # A slow rise: each ADWIN cut is small (a warning), the level ends 7 points above the holdout's 5%.
    ramp = (rng.random(12_000) < np.linspace(0.05, 0.12, 12_000)).astype(float)
    errors = np.concatenate([before, ramp])
    ts = np.arange(errors.size, dtype=float)

    def severities(det: ErrorRateDetector) -> list[str]:
        out: list[str] = []
        for lo in range(0, errors.size, 500):
            out += [s.severity for s in det.update(errors[lo : lo + 500], ts[lo : lo + 500])]
        return out

    assert "critical" not in severities(ErrorRateDetector())  # cuts alone: only a warning
    assert "critical" in severities(ErrorRateDetector(reference_error_rate=0.05))
    calm = ErrorRateDetector(reference_error_rate=0.05)
    assert all(s.severity != "critical" for s in calm.update(before, ts[: before.size]))


def test_signals_carry_the_partition_and_offsets_of_their_window() -> None:
    rng = np.random.default_rng(0)
    ref = Reference.from_values(rng.normal(10.0, 2.0, 5000))
    x = np.concatenate([rng.normal(10.0, 2.0, 20_000), rng.normal(12.0, 2.0, 20_000)])
    x[rng.random(x.size) < 0.01] = np.nan  # skipped values move no offset
    offsets = 5_000 + 3 * np.arange(x.size)  # a partition's offsets: increasing, not contiguous
    ts = np.arange(x.size) / 100.0
    whole = AdwinDetector("x", ref)
    plain = AdwinDetector("x", ref).update(x, ts)
    first = AdwinDetector("x", ref)
    got = first.update(x[:20_300], ts[:20_300], offsets=offsets[:20_300], partition=4)
    # a checkpoint between the cut and its settling keeps the window's first offset
    second = AdwinDetector.from_state(json.loads(json.dumps(first.state())))
    got += second.update(x[20_300:], ts[20_300:], offsets=offsets[20_300:], partition=4)
    assert got == whole.update(x, ts, offsets=offsets, partition=4)
    (s,) = got
    assert s.partition == 4
    start, end = s.window_offsets[4]
    first_finite = int(np.flatnonzero(np.isfinite(x))[0])
    assert start == offsets[first_finite]
    assert end == offsets[s.window_end_index - 1]  # the last event of the window (end index exclusive)
    # without offsets: same signal, no offsets
    assert [p.model_copy(update={"partition": 4, "window_offsets": {4: (start, end)}}) for p in plain] == got
    assert plain[0].window_offsets == {} and plain[0].partition is None
