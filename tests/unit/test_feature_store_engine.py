"""The aggregation engine against a brute-force recomputation from raw events, and its rules:
window expiry, lateness, the distinct-count bound, batching independence, bounded state."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from feature_store.definitions import Aggregation, FeatureView, fraud_feature_view
from feature_store.engine import Engine, StateMismatch
from tests.unit.test_feature_store_streams import (
    LATENESS_S,
    Stream,
    brute_force,
    mixed_view,
    random_stream,
    run_in_batches,
)

T0 = 1_699_999_200.0  # a whole hour, so tiles start at round offsets from it


def _run(view: FeatureView, ts: list[float], values: dict[str, list[Any]]) -> np.ndarray:
    """Features of one entity's events, applied in one batch."""
    engine = Engine(view)
    out = engine.run(
        engine.empty_states(1),
        np.zeros(len(ts), dtype=np.int64),
        np.array(ts),
        engine.columns(values, len(ts)),
    )
    return out.features


def _view(*aggs: Aggregation, passthrough: list[str] | None = None, **kw: object) -> FeatureView:
    return FeatureView(name="t", passthrough=passthrough or [], aggregations=list(aggs), **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_aggregation_matches_brute_force(seed: int) -> None:
    view = mixed_view()
    s = random_stream(seed, 1500, entities=4)
    expected, rejected = brute_force(view, s)
    got, got_rejected = run_in_batches(view, s, [1000])
    assert set(got_rejected) == rejected and len(rejected) > 20
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, equal_nan=True)


def test_fraud_view_matches_brute_force() -> None:
    view = fraud_feature_view()
    rng = np.random.default_rng(5)
    base = random_stream(5, 1500, entities=4, mean_gap_s=120)
    values = {name: rng.lognormal(1, 1, len(base)).round(3).tolist() for name in view.passthrough}
    values["merchant_category"] = rng.choice(np.array(["grocery", "travel", "gas", None]), len(base)).tolist()
    values["country"] = rng.choice(["DE", "US", "FR"], len(base)).tolist()
    s = Stream(base.entity_ids, base.ts, values, base.partitions, base.offsets)
    expected, rejected = brute_force(view, s)
    got, got_rejected = run_in_batches(view, s, [333])
    assert set(got_rejected) == rejected
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("seed", [3, 4])
def test_batching_does_not_change_any_value(seed: int) -> None:
    view = mixed_view()
    s = random_stream(seed, 2000, entities=8, partitions=3)
    one, rejected_one = run_in_batches(view, s, [1])
    for sizes in ([7], [1000], [1, 50, 3, 997]):
        other, rejected_other = run_in_batches(view, s, sizes)
        np.testing.assert_array_equal(other, one)  # bit for bit, NaN where NaN
        assert rejected_other == rejected_one


def test_a_window_forgets_events_older_than_its_length() -> None:
    view = _view(Aggregation(function="count", windows=["10m"]), Aggregation(function="count"))
    # 1-minute tiles: events at 0s, 30s, 9m59s, then 10m (a new tile: the first tile leaves), then 20m.
    ts = [T0, T0 + 30, T0 + 599, T0 + 600, T0 + 1200, T0 + 1260]
    f = _run(view, ts, {})
    assert f[:, 0].tolist() == [1, 2, 3, 2, 1, 2]  # count_10m
    assert f[:, 1].tolist() == [1, 2, 3, 4, 5, 6]  # lifetime count


def test_windows_are_whole_tiles_ending_with_the_events_tile() -> None:
    view = _view(Aggregation(function="sum", source="x", windows=["1h"]), tiles={"1h": "10m"})
    # 10-minute tiles: at 1:05 the window is the tiles 0:10 .. 1:00, so the event at 0:09 is out
    # and the one at 0:10 in, although both are more than an hour before.
    ts = [T0 + 9 * 60, T0 + 10 * 60, T0 + 65 * 60]
    f = _run(view, ts, {"x": [1.0, 10.0, 100.0]})
    assert f[:, 0].tolist() == [1.0, 11.0, 110.0]


def test_too_late_events_are_rejected_with_a_reason_and_not_applied() -> None:
    view = _view(
        Aggregation(function="count", windows=["1h"]),
        Aggregation(function="sum", source="x"),
        allowed_lateness=timedelta(minutes=10),
    )
    engine = Engine(view)
    states = engine.empty_states(1)
    ts = np.array([T0 + 3600, T0 + 3300, T0 + 3000, T0 + 2999, math.nan])
    out = engine.run(states, np.zeros(5, dtype=np.int64), ts, engine.columns({"x": [1, 2, 4, 8, 16]}, 5))
    assert out.applied.tolist() == [True, True, True, False, False]
    assert set(out.rejected) == {3, 4}
    assert out.rejected[3].startswith("too late: event time 2023-11-14T22:49:59Z is 601.000s behind")
    assert "newest event time 2023-11-14T23:00:00Z" in out.rejected[3]
    assert "allowed lateness 600s" in out.rejected[3]
    assert out.rejected[4] == "invalid event time: nan"
    assert np.isnan(out.features[3]).all()
    # 10 minutes late is still in time; its window ends with its own tile, before the others.
    assert out.features[2].tolist() == [1.0, 7.0]
    assert states[0, 1] == 3  # events applied: the rejected ones changed nothing
    after = engine.run(
        states, np.zeros(1, dtype=np.int64), np.array([T0 + 3601]), engine.columns({"x": [0]}, 1)
    )
    assert after.features[0].tolist() == [4.0, 7.0]


def test_a_late_event_counts_in_its_own_tile_and_in_later_windows() -> None:
    view = _view(Aggregation(function="count", windows=["10m"]), Aggregation(function="last", source="x"))
    f = _run(view, [T0 + 600, T0 + 60, T0 + 610], {"x": [1.0, 2.0, None]})
    assert f[:, 0].tolist() == [1, 1, 3]  # the late event's window (tiles 0..1 min) lacks the first
    assert f[:, 1].tolist() == [1.0, 1.0, 1.0]  # last: newest by event time, not by arrival


def test_missing_and_non_numeric_values() -> None:
    view = _view(
        Aggregation(function="sum", source="x"),
        Aggregation(function="mean", source="x"),
        Aggregation(function="min", source="x"),
        Aggregation(function="count", source="x"),
        Aggregation(function="count"),
        passthrough=["x"],
    )
    f = _run(view, [T0, T0 + 1, T0 + 2], {"x": [None, "3", None]})
    assert f[2, 1] == 0.0 and math.isnan(f[2, 2]) and math.isnan(f[2, 3])  # sum, mean, min
    assert f[2, 4:].tolist() == [0.0, 3.0]  # count of x, count of events
    assert np.isnan(f[:, 0]).all()  # passthrough of a missing or non-numeric value


def test_booleans_are_one_and_zero_as_in_the_model_encoding() -> None:
    view = _view(Aggregation(function="sum", source="x", windows=["10m"]), passthrough=["x"])
    f = _run(view, [T0, T0 + 1, T0 + 2], {"x": [True, False, True]})
    assert f[:, 0].tolist() == [1.0, 0.0, 1.0]  # passthrough, as inference.encoding reads it
    assert f[:, 1].tolist() == [1.0, 1.0, 2.0]  # sum over 10 minutes


def test_distinct_count_is_exact_up_to_capacity_then_a_lower_bound() -> None:
    view = _view(
        Aggregation(function="distinct_count", source="c", windows=["1h"]),
        Aggregation(function="distinct_count", source="c"),
        categorical=["c"],
        distinct_capacity=8,
    )
    engine = Engine(view)
    values = [f"v{i}" for i in range(20)]
    f = _run(view, [T0 + i for i in range(20)], {"c": values})
    assert f[:8, 0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert (f[8:, 0] == 9).all()  # 8 tracked plus "more": at least 9
    assert (f[8:, 1] == 9).all()
    assert engine.width == Engine(view.model_copy(update={"distinct_capacity": 8})).width  # fixed size


def test_distinct_values_of_tiles_no_event_can_reach_are_forgotten() -> None:
    view = _view(
        Aggregation(function="distinct_count", source="c", windows=["10m"]),
        categorical=["c"],
        distinct_capacity=3,
        allowed_lateness=timedelta(0),
    )
    # Three values early, then much later three new ones: the early ones left every reachable
    # tile, so the new ones fit and the count is exact again.
    ts = [T0, T0 + 1, T0 + 2, T0 + 7200, T0 + 7201, T0 + 7202, T0 + 7203]
    f = _run(view, ts, {"c": ["a", "b", "c", "d", "e", "f", "d"]})
    assert f[:, 0].tolist() == [1, 2, 3, 1, 2, 3, 3]


def test_state_is_bounded_and_survives_packing() -> None:
    view = mixed_view()
    engine = Engine(view)
    s = random_stream(7, 3000, entities=1)
    rows = np.zeros(len(s), dtype=np.int64)
    states = engine.empty_states(1)
    engine.run(states, rows[:1500], s.ts[:1500], engine.columns(s.batch(0, 1500)["values"], 1500))
    blob = engine.encode(states[0], ["k1"])
    assert len(blob) <= engine.state_bytes + len(b'["k1"]')
    unpacked, tails = engine.decode([blob, None])
    assert list(tails) == [["k1"], [None]]
    assert np.isnan(unpacked[1, 0])  # a new entity: no event yet
    # Only words no read can reach are left out: the rest comes back bit for bit...
    dropped = engine.unreadable(states)
    assert dropped.any() and not dropped[:, :2].any()
    same = unpacked.view(np.int64) == states.view(np.int64)
    assert same[0][~dropped[0]].all()
    assert engine.encode(unpacked[0], ["k1"]) == blob
    # ... so the packed state serves the same features, now and for every later event.
    np.testing.assert_array_equal(engine.latest(unpacked[:1]), engine.latest(states))
    rest = engine.columns(s.batch(1500, 3000)["values"], 1500)
    a = engine.run(states, rows[1500:], s.ts[1500:], rest)
    b = engine.run(unpacked[:1].copy(), rows[1500:], s.ts[1500:], rest)
    np.testing.assert_array_equal(a.features, b.features)


def test_a_dense_format_2_state_is_still_read() -> None:
    engine = Engine(mixed_view())
    s = random_stream(3, 200, entities=1)
    states = engine.empty_states(1)
    engine.run(states, np.zeros(len(s), dtype=np.int64), s.ts, engine.columns(s.values, len(s)))
    v2 = b"F\x02" + engine.fingerprint.encode() + states[0].astype("<f8").tobytes() + b'["k1"]'
    unpacked, tails = engine.decode([v2])
    assert list(tails) == [["k1"]]
    np.testing.assert_array_equal(unpacked.view(np.int64), states.view(np.int64))


def test_a_state_of_another_definition_is_refused() -> None:
    engine = Engine(mixed_view())
    blob = engine.encode(engine.empty_states(1)[0], [None])
    other = Engine(mixed_view().model_copy(update={"allowed_lateness": timedelta(minutes=5)}))
    with pytest.raises(StateMismatch, match="another definition"):
        other.decode([blob])


def test_latest_reads_the_state_at_its_newest_event_time() -> None:
    view = _view(Aggregation(function="count", windows=["10m"]), passthrough=["x"])
    engine = Engine(view)
    states = engine.empty_states(2)
    ts = np.array([T0 + 600, T0 + 500, T0])
    engine.run(states, np.zeros(3, dtype=np.int64), ts, engine.columns({"x": [1.0, 2.0, 3.0]}, 3))
    latest = engine.latest(states)
    # The newest event's x; the window at T0+600 holds the tiles T0+60 .. T0+600: two events.
    assert latest[0].tolist() == [1.0, 2.0]
    assert np.isnan(latest[1]).all()  # an entity without events


def test_queries_read_without_applying() -> None:
    view = _view(Aggregation(function="count", windows=["10m"]), passthrough=["x"])
    engine = Engine(view)
    states = engine.empty_states(1)
    ts = np.array([T0, T0 + 60, T0 + 3600])
    out = engine.run(
        states,
        np.zeros(3, dtype=np.int64),
        ts,
        engine.columns({"x": [5.0, None, None]}, 3),
        query=np.array([False, True, True]),
    )
    assert out.features.tolist() == [[5.0, 1.0], [5.0, 1.0], [5.0, 0.0]]
    assert out.applied.tolist() == [True, False, False] and states[0, 1] == 1


def test_columns_refuse_a_wrong_length() -> None:
    engine = Engine(mixed_view())
    with pytest.raises(ValueError, match="'amount' has 2 values, expected 3"):
        engine.columns({"amount": [1, 2]}, 3)


def test_the_lateness_margin_keeps_what_late_events_need() -> None:
    # A late event right at the lateness limit still sees its whole window: tiles are kept for
    # window + lateness, even after many newer tiles.
    view = _view(
        Aggregation(function="count", windows=["10m"]), allowed_lateness=timedelta(seconds=LATENESS_S)
    )
    ts = [T0 + i * 30 for i in range(60)] + [T0 + 59 * 30 - LATENESS_S]
    f = _run(view, ts, {})
    t = ts[-1]
    expected = (
        sum(1 for u in ts[:-1] if math.floor(t / 60) - 9 <= math.floor(u / 60) <= math.floor(t / 60)) + 1
    )
    assert f[-1, 0] == expected
