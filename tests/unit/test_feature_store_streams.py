"""Random event streams and a brute-force reference of the feature semantics, for the feature
store tests (the unit tests here check the streams themselves).

`brute_force` recomputes every event's features from the raw events alone, straight from the
documented rules (feature_store/README.md), with none of the engine's code: per event, the
entity's events applied before it in log order plus itself, windows of whole tiles ending with
the event's tile, lateness against the newest applied event time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from feature_store.definitions import Aggregation, FeatureView
from feature_store.engine import Engine

LATENESS_S = 600.0


@dataclass
class Stream:
    entity_ids: list[str]
    ts: np.ndarray
    values: dict[str, list[Any]]
    partitions: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.entity_ids)

    def batch(self, start: int, stop: int) -> dict[str, Any]:
        """Keyword arguments of `OnlineStore.write_batch` for events start..stop-1."""
        return {
            "entity_ids": self.entity_ids[start:stop],
            "ts": self.ts[start:stop],
            "values": {k: v[start:stop] for k, v in self.values.items()},
            "partitions": self.partitions[start:stop],
            "offsets": self.offsets[start:stop],
        }


def random_stream(
    seed: int,
    n: int,
    entities: int = 6,
    partitions: int = 2,
    mean_gap_s: float = 40.0,
    late: float = 0.1,
    too_late: float = 0.03,
    kinds: int = 6,
) -> Stream:
    """Events of a few entities (entity k always on partition k % partitions), in log order:
    mostly increasing time, ``late`` of them moved back by up to 95% of the lateness (accepted),
    ``too_late`` by 1.2 to 3 lateness (rejected); some missing values and a categorical feature."""
    rng = np.random.default_rng(seed)
    ent = rng.integers(0, entities, n)
    ts = 1.7e9 + np.cumsum(rng.exponential(mean_gap_s, n))
    u = rng.random(n)
    ts = np.where(u < late, ts - rng.uniform(0, 0.95 * LATENESS_S, n), ts)
    ts = np.where(u > 1 - too_late, ts - rng.uniform(1.2 * LATENESS_S, 3 * LATENESS_S, n), ts)
    amount: list[Any] = rng.lognormal(3, 1, n).round(2).tolist()
    for i in rng.choice(n, n // 10, replace=False).tolist():
        amount[i] = None
    distance: list[Any] = rng.lognormal(1.5, 1.0, n).round(4).tolist()
    for i in rng.choice(n, n // 20, replace=False).tolist():
        distance[i] = "far"  # not a number: missing
    kind: list[Any] = [f"k{x}" for x in rng.integers(0, kinds, n).tolist()]
    for i in rng.choice(n, n // 20, replace=False).tolist():
        kind[i] = None
    part = ent % partitions
    offsets = np.zeros(n, dtype=np.int64)
    for p in range(partitions):
        idx = np.flatnonzero(part == p)
        offsets[idx] = np.arange(len(idx)) + 1000 * p
    return Stream(
        [f"ent-{e}" for e in ent.tolist()],
        ts,
        {"amount": amount, "distance": distance, "kind": kind, "hour": rng.integers(0, 24, n).tolist()},
        part.astype(np.int64),
        offsets,
    )


def mixed_view() -> FeatureView:
    """Every aggregation function, several windows and tile sizes, lifetime aggregates."""
    return FeatureView(
        name="test",
        passthrough=["amount", "hour", "kind"],
        categorical=["kind"],
        allowed_lateness=timedelta(seconds=LATENESS_S),
        distinct_capacity=62,
        aggregations=[
            Aggregation(function="count", windows=["10m", "1h", "6h"]),
            Aggregation(function="count", source="amount", windows=["1h"]),
            Aggregation(function="count", source="kind", windows=["1h"]),
            Aggregation(function="sum", source="amount", windows=["10m", "1h"]),
            Aggregation(function="mean", source="amount", windows=["1h", "6h"]),
            Aggregation(function="min", source="distance", windows=["1h"]),
            Aggregation(function="max", source="amount", windows=["6h"]),
            Aggregation(function="last", source="amount", windows=["1h"]),
            Aggregation(function="last", source="distance"),
            Aggregation(function="sum", source="amount"),
            Aggregation(function="distinct_count", source="kind", windows=["1h", "6h"]),
            Aggregation(function="distinct_count", source="kind"),
        ],
        tiles={"6h": "20m"},
    )


def as_number_ref(v: Any) -> float:
    return (
        float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else math.nan
    )


def as_category_ref(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    number = as_number_ref(v)
    return None if math.isnan(number) else repr(number)


def brute_force(view: FeatureView, s: Stream) -> tuple[np.ndarray, set[int]]:
    """Every event's features by the documented rules, from raw events; and the rejected ones."""
    lateness = view.allowed_lateness.total_seconds()
    categorical = set(view.categorical)
    out = np.full((len(s), len(view.feature_names())), math.nan)
    rejected: set[int] = set()
    seen: dict[int, int] = {}
    applied: dict[str, list[int]] = {}
    for i, (entity, t) in enumerate(zip(s.entity_ids, s.ts.tolist(), strict=True)):
        p, o = int(s.partitions[i]), int(s.offsets[i])
        if o <= seen.get(p, -1):
            continue  # a duplicate: skipped
        seen[p] = o
        before = applied.setdefault(entity, [])
        if not math.isfinite(t) or (before and t < max(s.ts[j] for j in before) - lateness):
            rejected.add(i)
            continue
        before.append(i)
        row: list[float] = [
            math.nan if f in categorical else as_number_ref(s.values[f][i]) for f in view.passthrough
        ]
        for agg in view.aggregations:
            windows: list[timedelta | None] = [*agg.windows] or [None]
            for w in windows:
                if w is None:
                    inside = list(before)
                else:
                    tile = view.tile_size(w).total_seconds()
                    k = round(w.total_seconds() / tile)
                    hi = math.floor(t / tile)
                    inside = [j for j in before if hi - k + 1 <= math.floor(s.ts[j] / tile) <= hi]
                row.append(aggregate(agg, inside, s))
        out[i] = row
    return out, rejected


def aggregate(agg: Aggregation, inside: list[int], s: Stream) -> float:
    if agg.source is None:
        return float(len(inside))
    raw = s.values[agg.source]
    if agg.function == "distinct_count":
        return float(len({c for j in inside if (c := as_category_ref(raw[j])) is not None}))
    if agg.function == "count":
        return float(sum(1 for j in inside if (as_category_ref(raw[j]) is not None)))
    numbers = [(j, v) for j in inside if not math.isnan(v := as_number_ref(raw[j]))]
    values = [v for _, v in numbers]
    if agg.function == "sum":
        return math.fsum(values)
    if not values:
        return math.nan
    if agg.function == "mean":
        return math.fsum(values) / len(values)
    if agg.function == "min":
        return min(values)
    if agg.function == "max":
        return max(values)
    return max(numbers, key=lambda jv: (s.ts[jv[0]], jv[0]))[1]  # last: newest time, then log order


def run_in_batches(view: FeatureView, s: Stream, sizes: list[int]) -> tuple[np.ndarray, dict[int, str]]:
    """What the online store computes, without Redis: the engine on each batch, with every state
    packed and unpacked between batches and duplicates (offset <= watermark) skipped. Batch ``k``
    has ``sizes[k % len(sizes)]`` events. Returns features (NaN for skipped) and rejections."""
    engine = Engine(view)
    stored: dict[str, bytes] = {}
    marks: dict[int, int] = {}
    features, rejected = [], {}
    start, k = 0, 0
    while start < len(s):
        stop = min(len(s), start + sizes[k % len(sizes)])
        k += 1
        entities = list(dict.fromkeys(s.entity_ids[start:stop]))
        row = {e: i for i, e in enumerate(entities)}
        states, tails = engine.decode([stored.get(e) for e in entities])
        parts, offs = s.partitions[start:stop], s.offsets[start:stop]
        dup = np.array([o <= marks.get(p, -1) for p, o in zip(parts.tolist(), offs.tolist(), strict=True)])
        rows = np.array([row[e] for e in s.entity_ids[start:stop]], dtype=np.int64)
        cols = engine.columns({n: v[start:stop] for n, v in s.values.items()}, stop - start)
        out = engine.run(states, rows, s.ts[start:stop], cols, active=~dup, tails=tails)
        for e, i in row.items():
            newest = int(out.newest[i])
            cats = [out.categorical[c][newest] for c in engine.pt_categorical] if newest >= 0 else tails[i]
            stored[e] = engine.encode(states[i], cats)
        for p, o in zip(parts.tolist(), offs.tolist(), strict=True):
            marks[p] = max(marks.get(p, -1), o)
        features.append(out.features)
        rejected.update({start + i: reason for i, reason in out.rejected.items()})
        start = stop
    return np.vstack(features), rejected


# -- the streams themselves ------------------------------------------------------------------------


def test_streams_have_late_too_late_and_missing_events() -> None:
    s = random_stream(1, 3000)
    newest: dict[str, float] = {}
    late = too_late = 0
    for e, t in zip(s.entity_ids, s.ts.tolist(), strict=True):
        if t < newest.get(e, -math.inf):
            late += 1
            too_late += t < newest[e] - LATENESS_S
        newest[e] = max(newest.get(e, -math.inf), t)
    assert late > 100 and too_late > 30 and late - too_late > 100
    assert sum(v is None for v in s.values["amount"]) == 300


def test_offsets_increase_within_each_partition() -> None:
    s = random_stream(2, 500, partitions=3)
    for p in range(3):
        offs = s.offsets[s.partitions == p]
        assert (np.diff(offs) == 1).all()
    for e, p in zip(s.entity_ids, s.partitions.tolist(), strict=True):
        assert int(e.split("-")[1]) % 3 == p


def test_brute_force_rejects_exactly_the_too_late_events() -> None:
    s = random_stream(3, 400)
    features, rejected = brute_force(mixed_view(), s)
    assert rejected and all(np.isnan(features[i]).all() for i in rejected)
    assert not np.isnan(features[[i for i in range(400) if i not in rejected], 3]).any()  # count_10m
