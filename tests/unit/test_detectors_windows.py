"""Window semantics: count, sliding, event time (with lateness), capped; batch-size independence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detectors.psi import PSIWindow
from detectors.reference import Reference
from detectors.windowing import Windower, WindowSpec


def _feed(w: Windower, ts: np.ndarray, batch: int) -> list[tuple[int, int, float, float, int]]:
    out = []
    for i in range(0, ts.size, batch):
        a = w.assign(ts[i : i + batch])
        out += [(c.start_index, c.end_index, c.start_ts, c.end_ts, c.n) for c in a.closed]
    return out


@pytest.mark.parametrize("batch", [1, 7, 100, 1000, 5000])
def test_count_windows_do_not_depend_on_batch_size(batch: int) -> None:
    ts = np.arange(2500, dtype=float)
    tumbling = _feed(Windower(WindowSpec(size=1000)), ts, batch)
    assert tumbling == [(0, 1000, 0.0, 999.0, 1000), (1000, 2000, 1000.0, 1999.0, 1000)]
    sliding = _feed(Windower(WindowSpec(size=1000, step=250)), ts, batch)
    assert [s[:2] for s in sliding] == [(k * 250, k * 250 + 1000) for k in range(7)]
    assert all(s[4] == 1000 for s in sliding)


def test_time_windows_are_aligned_and_drop_late_events() -> None:
    w = Windower(WindowSpec(seconds=10.0, allowed_lateness=2.0))
    a = w.assign(np.array([1.0, 5.0, 9.0, 11.0]))
    assert a.closed == []  # watermark 11 - 2 = 9 < 10
    a = w.assign(np.array([3.0, 12.5]))  # 3.0 is still on time; watermark 10.5 closes [0, 10)
    assert [(c.start_ts, c.end_ts, c.n, c.start_index, c.end_index) for c in a.closed] == [
        (0.0, 10.0, 4, 0, 5)
    ]
    a = w.assign(np.array([4.0, 13.0, np.nan]))  # 4.0 belongs to a closed window: late; NaN: dropped
    assert a.keep.tolist() == [False, True, False]
    assert w.n_late == 2
    a = w.assign(np.array([45.0]))  # closes [10, 20); the empty [20, 30), [30, 40) are skipped
    assert [(c.start_ts, c.n) for c in a.closed] == [(10.0, 3)]


def test_sliding_time_windows() -> None:
    w = Windower(WindowSpec(seconds=30.0, step=10.0))
    ts = np.arange(0.0, 100.0, 1.0)
    closed = _feed(w, ts, 13)
    # a window ends at each closed pane: [-20, 10), [-10, 20), [0, 30), ..., [60, 90)
    assert [(c[2], c[3]) for c in closed] == [(e - 30.0, e) for e in range(10, 100, 10)]
    assert [c[4] for c in closed] == [10, 20] + [30] * 7


def test_capped_windows_close_on_size_or_time() -> None:
    w = Windower(WindowSpec(size=5, seconds=10.0))
    ts = np.array([0.0, 1, 2, 3, 4, 5, 6, 30, 31, 32])
    closed = _feed(w, ts, 3)
    # [0..4] by size, [5, 6] by time when 30 arrives; [30, 31, 32] still open
    assert [(c[0], c[1], c[4]) for c in closed] == [(0, 5, 5), (5, 7, 2)]


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="size"):
        WindowSpec()
    with pytest.raises(ValueError, match="dividing"):
        WindowSpec(size=1000, step=300)
    with pytest.raises(ValueError, match="divide"):
        WindowSpec(seconds=60.0, step=25.0)
    with pytest.raises(ValueError, match="slide"):
        WindowSpec(size=100, seconds=60.0, step=10)


@pytest.mark.parametrize(
    "kwargs",
    [{"window_size": 1000}, {"window_size": 1000, "step": 250}, {"window_seconds": 5.0, "step": 2.5}],
)
def test_psi_window_checkpoint_mid_window(kwargs: dict[str, float]) -> None:
    rng = np.random.default_rng(2)
    ref = Reference.from_values(rng.normal(size=3000))
    x = np.concatenate([rng.normal(size=6000), rng.normal(0.7, 1.0, size=6000)])
    ts = np.arange(x.size) / 200.0
    whole = PSIWindow(ref, "x", **kwargs)  # type: ignore[arg-type]
    expected = [s for i in range(0, x.size, 700) for s in whole.update(x[i : i + 700], ts[i : i + 700])]
    first = PSIWindow(ref, "x", **kwargs)  # type: ignore[arg-type]
    got = [s for i in range(0, 6300, 700) for s in first.update(x[i : i + 700], ts[i : i + 700])]
    restored = PSIWindow.from_state(json.loads(json.dumps(first.state(), allow_nan=False)))
    got += [s for i in range(6300, x.size, 700) for s in restored.update(x[i : i + 700], ts[i : i + 700])]
    assert expected and got == expected
