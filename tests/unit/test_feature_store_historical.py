"""Historical features: replaying the log gives the online path's per-event features exactly;
point-in-time queries use only events at or before their time."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from feature_store.definitions import FeatureView
from feature_store.historical import EventLog, HistoricalEvent, get_historical_features, replay
from tests.unit.test_feature_store_streams import (
    Stream,
    aggregate,
    as_number_ref,
    mixed_view,
    random_stream,
    run_in_batches,
)


def _events(s: Stream) -> list[HistoricalEvent]:
    return [
        HistoricalEvent(
            entity_id=s.entity_ids[i],
            ts=float(s.ts[i]),
            values={k: v[i] for k, v in s.values.items()},
            partition=int(s.partitions[i]),
            offset=int(s.offsets[i]),
        )
        for i in range(len(s))
    ]


def _log(s: Stream) -> EventLog:
    return EventLog(s.entity_ids, s.ts, s.values, s.partitions, s.offsets)


def test_replay_equals_the_online_computation_bit_for_bit() -> None:
    view = mixed_view()
    s = random_stream(11, 3000, entities=7, partitions=3)
    online, rejected = run_in_batches(view, s, [1, 17, 400, 1000])
    result = replay(view, _events(s), chunk_size=701)
    np.testing.assert_array_equal(result.features, online)
    assert result.rejected == rejected
    assert result.applied.sum() == len(s) - len(rejected)
    same = replay(view, _log(s))
    np.testing.assert_array_equal(same.features, online)


def test_features_for_picks_events_by_partition_and_offset() -> None:
    view = mixed_view()
    s = random_stream(12, 500, partitions=2)
    result = replay(view, _log(s))
    picks = [(int(s.partitions[i]), int(s.offsets[i])) for i in (400, 3, 250)]
    np.testing.assert_array_equal(result.features_for(picks), result.features[[400, 3, 250]])
    with pytest.raises(KeyError, match="not in the log"):
        result.features_for([(9, 9)])


def test_duplicates_in_the_log_are_skipped_like_online_replays() -> None:
    view = mixed_view()
    s = random_stream(13, 600, partitions=1)
    doubled = Stream(
        s.entity_ids[:400] + s.entity_ids[300:],
        np.r_[s.ts[:400], s.ts[300:]],
        {k: v[:400] + v[300:] for k, v in s.values.items()},
        np.r_[s.partitions[:400], s.partitions[300:]],
        np.r_[s.offsets[:400], s.offsets[300:]],
    )
    once, twice = replay(view, _log(s)), replay(view, _log(doubled))
    assert twice.duplicate.sum() == 100 and not twice.applied[400:500].any()
    np.testing.assert_array_equal(twice.features[500:], once.features[400:])
    np.testing.assert_array_equal(twice.features_for([(0, int(o)) for o in s.offsets]), once.features)


def test_point_in_time_features_use_only_events_up_to_the_time() -> None:
    view = mixed_view()
    s = random_stream(14, 800, entities=3)
    applied = replay(view, _log(s)).applied
    rng = np.random.default_rng(0)
    queries = [
        (f"ent-{rng.integers(0, 4)}", float(rng.uniform(s.ts.min() - 100, s.ts.max() + 100)))
        for _ in range(60)
    ]
    got = get_historical_features(view, _log(s), queries)
    names = view.feature_names()
    for row, (entity, t) in zip(got.features, queries, strict=True):
        mine = [i for i in range(len(s)) if applied[i] and s.entity_ids[i] == entity and s.ts[i] <= t]
        expected = _as_of(view, s, mine, t)
        for j, name in enumerate(names):
            assert (math.isnan(expected[j]) and math.isnan(row[j])) or math.isclose(
                row[j], expected[j], rel_tol=1e-9
            ), (
                entity,
                t,
                name,
                row[j],
                expected[j],
            )
    newest = {
        i: max(
            (k for k in range(len(s)) if applied[k] and s.entity_ids[k] == e and s.ts[k] <= t),
            key=lambda k: (s.ts[k], k),
            default=None,
        )
        for i, (e, t) in enumerate(queries)
    }
    assert got.categorical["kind"] == [None if k is None else s.values["kind"][k] for k in newest.values()]


def _as_of(view: FeatureView, s: Stream, events: list[int], t: float) -> list[float]:
    """Features at time t from these events, by the documented rules (no engine code)."""
    newest = max(events, key=lambda k: (s.ts[k], k), default=None)
    row = [
        math.nan if f in view.categorical or newest is None else as_number_ref(s.values[f][newest])
        for f in view.passthrough
    ]
    for agg in view.aggregations:
        windows: list[timedelta | None] = [*agg.windows] or [None]
        for w in windows:
            if w is None:
                inside = events
            else:
                tile = view.tile_size(w).total_seconds()
                k = round(w.total_seconds() / tile)
                hi = math.floor(t / tile)
                inside = [j for j in events if hi - k + 1 <= math.floor(s.ts[j] / tile) <= hi]
            row.append(aggregate(agg, inside, s))
    return row


def test_point_in_time_at_an_event_equals_its_online_features_for_an_ordered_log() -> None:
    view = mixed_view()
    s = random_stream(15, 400, late=0.0, too_late=0.0)
    per_event = replay(view, _log(s))
    # The last event of each entity at its own time: nothing after it, nothing later in the log.
    last = {e: i for i, e in enumerate(s.entity_ids)}
    got = get_historical_features(view, _log(s), [(e, float(s.ts[i])) for e, i in last.items()])
    np.testing.assert_array_equal(got.features, per_event.features[list(last.values())])


def test_events_and_times_may_be_datetimes() -> None:
    view = mixed_view()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    events = [HistoricalEvent(entity_id="a", ts=at, values={"amount": 3.0}, offset=0)]
    got = get_historical_features(
        view, events, [("a", datetime(2026, 1, 1, 0, 30)), ("a", at.timestamp() - 1)]
    )
    assert got.features[0, 0] == 3.0 and math.isnan(got.features[1, 0])
    assert got.features[:, view.feature_names().index("count_10m")].tolist() == [0.0, 0.0]
    assert got.features[0, view.feature_names().index("count_1h")] == 1.0
