"""Warm-up of windowed aggregates: which aggregate values hold the stream's steady state.

An aggregate over a window ``W`` read at event time ``t`` covers (at most) ``[t - W, t]``. The
store (or a training replay) that first applied an event at time ``since`` has seen every event
of that span exactly when ``t - W >= since``: from then on the value is the one a store running
forever would compute, whatever the entity. Before, it is truncated (counts, sums and distinct
counts low, min/max from too few events): a fresh stream's first ``W`` of event time is its
warm-up, and every entity's value grows through it.

**Rule.** A value of aggregate ``f`` at event time ``t`` *counts* (for its reference and for the
drift detectors) iff ``t - since >= warmup_seconds(f)``: the window's length for a windowed
aggregate; 0 for a lifetime ``last`` (it reads the newest value, the event's own unless that is
missing); never for the other lifetime aggregates (a lifetime count or sum grows for ever: it
has no steady state to compare with). The reference is built from the training replay's rows
under the same rule with the replay's own ``since`` (`Warmup`), and the worker applies it with
the online store's (`LiveWarmup`, reading ``<ns>:fs:<view>:since``, which the store keeps: see
`feature_store.online`). Raw (passthrough) features always count.

>>> from feature_store.definitions import fraud_feature_view
>>> need = warmup_seconds(fraud_feature_view())
>>> need["count_10m"], need["amount_mean_24h"], need["amount_last"]
(600.0, 86400.0, 0.0)
>>> tile_seconds(fraud_feature_view())["amount_mean_24h"]
7200.0
>>> w = Warmup(since=1000.0, seconds={"count_10m": 600.0})
>>> w.mask("count_10m", np.array([1000.0, 1599.0, 1600.0])).tolist()
[False, False, True]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from feature_store.definitions import FeatureView

if TYPE_CHECKING:
    import redis
    from redis.cluster import RedisCluster

SINCE_MEMBER = b"first"  # the one member of the ``since`` sorted set (score: the first event time)


def warmup_seconds(view: FeatureView) -> dict[str, float]:
    """Per aggregate feature of `view`, the event time since the stream's start before its values
    count (see the module docstring; ``inf``: never)."""
    out: dict[str, float] = {}
    for agg in view.aggregations:
        if agg.windows:
            for w in agg.windows:
                out[agg.name(w)] = w.total_seconds()
        else:
            out[agg.name(None)] = 0.0 if agg.function == "last" else math.inf
    return out


def tile_seconds(view: FeatureView) -> dict[str, float]:
    """Per aggregate feature of `view`, its window's tile size in seconds (0 for a lifetime one)."""
    out: dict[str, float] = {}
    for agg in view.aggregations:
        for w in agg.windows:
            out[agg.name(w)] = view.tile_size(w).total_seconds()
        if not agg.windows:
            out[agg.name(None)] = 0.0
    return out


def warm_masks(ts: np.ndarray, since: float | None, seconds: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Per feature of `seconds`, which of the events at times `ts` count (none while `since` is
    unknown). One comparison per distinct warm-up length, shared by its features."""
    ts = np.asarray(ts, dtype=np.float64)
    if since is None or not math.isfinite(since):
        none = np.zeros(ts.shape, dtype=bool)
        return dict.fromkeys(seconds, none)
    age = ts - since
    by_length: dict[float, np.ndarray] = {}
    out = {}
    for name, need in seconds.items():
        if need not in by_length:
            by_length[need] = age >= need if math.isfinite(need) else np.zeros(ts.shape, dtype=bool)
        out[name] = by_length[need]
    return out


@dataclass(frozen=True)
class Warmup:
    """The warm-up of a replayed training set: when the replay's first applied event happened
    and each aggregate's warm-up length (`warmup_seconds`)."""

    since: float
    seconds: dict[str, float]

    @classmethod
    def of(cls, view: FeatureView, applied_ts: np.ndarray) -> Warmup | None:
        """The warm-up of a replay whose applied events have times `applied_ts` (None: none)."""
        finite = np.asarray(applied_ts, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if not finite.size or not view.aggregations:
            return None
        return cls(float(finite.min()), warmup_seconds(view))

    def mask(self, name: str, ts: np.ndarray) -> np.ndarray:
        """Which rows (times `ts`) of feature `name` count (all of them for a raw feature)."""
        if name not in self.seconds:
            return np.ones(np.shape(ts), dtype=bool)
        return warm_masks(ts, self.since, {name: self.seconds[name]})[name]


@dataclass
class LiveWarmup:
    """The worker's side of the rule: the online store's ``since`` for one view, read from Redis
    until it is known and then again every `refresh_seconds` (wall clock: it only moves when the
    store starts over, after every state expired), and the masks of a batch."""

    client: redis.Redis | RedisCluster
    key: str
    seconds: dict[str, float]
    refresh_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    since: float | None = None
    _read_at: float = field(default=-math.inf)

    def masks(self, ts: np.ndarray) -> dict[str, np.ndarray]:
        now = self.clock()
        if self.since is None or now - self._read_at >= self.refresh_seconds:
            score = self.client.zscore(self.key, SINCE_MEMBER)
            self.since = None if score is None else float(score)
            self._read_at = now
        return warm_masks(ts, self.since, self.seconds)
