"""The retrain job's bounded window: the streaming row selection and the chunked topic reader
(Kafka replaced by in-memory messages) against the whole-log computation they replace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import driftline.training_data as td
from driftline.training_data import LabelIndex, topic_training_window, with_view_features
from feature_store.definitions import fraud_feature_view
from inference.retraining import RetrainConfig, RowWindow, select_rows
from stream.events import RawEvent
from stream.synthetic import FraudGenerator
from stream.topics import Topics


def _stream(window: RowWindow, ts: np.ndarray, cuts: list[int]) -> None:
    for a, b in zip([0, *cuts], [*cuts, ts.size], strict=True):
        window.add(ts[a:b], {"i": np.arange(a, b)})
        assert len(window) <= window.n_recent + window.n_older  # bounded after every chunk


@pytest.mark.parametrize("seed", range(5))
def test_row_window_keeps_what_select_rows_picks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    ts = np.round(rng.uniform(0, 500, size=n))  # many ties: the tie order must match too
    cfg = RetrainConfig(recent_rows=400, older_share=0.5, seed=seed)
    window = RowWindow(cfg)
    _stream(window, ts, sorted(rng.choice(np.arange(1, n), size=7, replace=False).tolist()))
    kept_ts, cols = window.rows()
    kept = cols["i"]
    assert np.all(np.diff(kept) > 0)  # arrival order
    assert np.array_equal(kept_ts, ts[kept])
    recent = set(select_rows(ts, RetrainConfig(recent_rows=400)).tolist())
    assert recent <= set(kept.tolist())
    older = set(kept.tolist()) - recent
    assert len(older) == 200 and all(ts[i] <= min(ts[list(recent)]) for i in older)
    # select_rows over the window picks every row of it, so retrain() trains on exactly these.
    assert select_rows(kept_ts, cfg).size == kept.size


def test_row_window_older_sample_is_uniform() -> None:
    n, hits = 200, np.zeros(200)
    ts = np.arange(n, dtype=np.float64)
    for seed in range(400):
        window = RowWindow(RetrainConfig(recent_rows=20, older_share=1.0, seed=seed))
        _stream(window, ts, [37, 90, 150])
        _, cols = window.rows()
        hits[cols["i"]] += 1
    assert np.all(hits[180:] == 400)  # the newest 20, always
    older = hits[:180] / 400  # each older row: chance 20/180
    assert abs(older.mean() - 20 / 180) < 1e-9 and older.min() > 0.04 and older.max() < 0.2


def test_row_window_without_older_share_and_fewer_rows_than_the_window() -> None:
    window = RowWindow(RetrainConfig(recent_rows=100))
    window.add(np.array([3.0, 1.0, 2.0]), {"i": np.arange(3)})
    ts, cols = window.rows()
    assert ts.tolist() == [3.0, 1.0, 2.0] and cols["i"].tolist() == [0, 1, 2]
    assert RowWindow(RetrainConfig()).rows()[0].size == 0


def test_label_index_newest_label_wins_and_unlabeled_is_minus_one() -> None:
    index = LabelIndex.of([("a", 1), ("b", 0), ("a", 0), ("c", 1)], chunk=2)
    assert len(index) == 3
    assert index.lookup(["a", "b", "c", "zzz"]).tolist() == [0, 0, 1, -1]
    assert LabelIndex.of([]).lookup(["a"]).tolist() == [-1]


def _fake_topics(monkeypatch: pytest.MonkeyPatch, events: list[RawEvent], labels: dict[str, int]) -> None:
    def raw_log(_config: dict[str, Any], _topic: str) -> Iterator[tuple[RawEvent, int, int]]:
        for offset, e in enumerate(events):
            yield e, offset % 3, offset // 3  # three partitions' worth of offsets

    def label_pairs(_config: dict[str, Any], _topic: str) -> Iterator[tuple[str, int]]:
        yield from labels.items()

    monkeypatch.setattr(td, "read_raw_log", raw_log)
    monkeypatch.setattr(td, "_topic_labels", label_pairs)


def test_topic_window_matches_the_whole_log_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = FraudGenerator(seed=3, entities=200, start_ts=1.7e9)
    batch = next(gen.batches(6000, chunk=6000))
    events = [RawEvent.model_validate(d) for d in batch.event_dicts()]
    rng = np.random.default_rng(0)
    labeled = rng.random(len(events)) < 0.6
    labels = {e.event_id: int(y) for e, y, on in zip(events, batch.labels, labeled, strict=True) if on}
    _fake_topics(monkeypatch, events, labels)
    view = fraud_feature_view()
    cfg = RetrainConfig(recent_rows=1500, older_share=0.0)

    got = topic_training_window({}, Topics("t"), view, cfg, chunk_size=700)

    # The whole log at once (what the job did before), then select_rows.
    raw = {k: [e.features.get(k) for e in events] for k in sorted({k for e in events for k in e.features})}
    ys = np.array([labels.get(e.event_id, -1) for e in events])
    full = with_view_features(
        view, [e.entity_id for e in events], np.array([e.ts.timestamp() for e in events]), raw, ys
    )
    sel = select_rows(full.ts, cfg)
    assert len(got) == sel.size == 1500
    assert np.array_equal(got.ts, full.ts[sel]) and np.array_equal(got.labels, full.labels[sel])
    assert set(got.numeric) == set(full.numeric) and set(got.categorical) == set(full.categorical)
    for name, col in got.numeric.items():
        np.testing.assert_array_equal(col, full.numeric[name][sel])
    for name, col in got.categorical.items():
        assert col.tolist() == full.categorical[name][sel].tolist()
    # The warm-up starts at the log's first event, not at the window's first row.
    assert got.warmup is not None and got.warmup == full.warmup
    assert got.warmup.since == min(e.ts.timestamp() for e in events) < float(got.ts.min())


def test_topic_window_without_a_view_keeps_raw_features(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = next(FraudGenerator(seed=1, entities=50, start_ts=1.7e9).batches(500, chunk=500))
    events = [RawEvent.model_validate(d) for d in batch.event_dicts()]
    _fake_topics(monkeypatch, events, {e.event_id: 1 for e in events[::2]})
    got = topic_training_window({}, Topics("t"), None, RetrainConfig(recent_rows=100), chunk_size=64)
    assert len(got) == 100 and set(got.labels.tolist()) == {1}
    assert set(got.numeric) | set(got.categorical) == set(events[0].features)
