"""Feature definitions: what a feature view computes per entity, loadable from YAML or dicts.

A `FeatureView` has *passthrough* features (the event's own raw values, names unchanged) and
windowed *aggregations* of an entity's events over event time. Each window is kept as tiles:
fixed-size buckets of event time, combined when read (see `FeatureView.tile_size`).

Durations are written ``"500ms"``, ``"30s"``, ``"10m"``, ``"1h"``, ``"24h"``, ``"7d"`` (or
seconds as a number, or ISO 8601 such as ``"PT10M"``).

>>> view = FeatureView.model_validate({
...     "name": "cards",
...     "passthrough": ["amount", "country"],
...     "categorical": ["country"],
...     "aggregations": [
...         {"function": "count", "windows": ["10m", "1h"]},
...         {"function": "mean", "source": "amount", "windows": ["24h"]},
...         {"function": "last", "source": "amount"},
...         {"function": "distinct_count", "source": "country", "windows": ["24h"]},
...     ],
... })
>>> view.feature_names()
['amount', 'country', 'count_10m', 'count_1h', 'amount_mean_24h', 'amount_last', 'country_distinct_count_24h']
>>> [format_duration(view.tile_size(w)) for w in view.windows()]
['1m', '5m', '2h']
>>> FeatureView.from_yaml(view.to_yaml()) == view
True
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

AggregationFunction = Literal["count", "sum", "mean", "min", "max", "last", "distinct_count"]
NUMERIC_FUNCTIONS = frozenset({"sum", "mean", "min", "max", "last"})

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
# Default tile sizes: the largest of these that divides the window into at least 10 tiles.
_NICE_TILES_MS = [
    u * m
    for u, m in [
        (7, 86_400_000),
        (1, 86_400_000),
        (12, 3_600_000),
        (6, 3_600_000),
        (3, 3_600_000),
        (2, 3_600_000),
        (1, 3_600_000),
        (30, 60_000),
        (15, 60_000),
        (10, 60_000),
        (5, 60_000),
        (2, 60_000),
        (1, 60_000),
        (30, 1_000),
        (15, 1_000),
        (10, 1_000),
        (5, 1_000),
        (2, 1_000),
        (1, 1_000),
    ]
]
MIN_TILES_PER_WINDOW = 10


def parse_duration(value: object) -> object:
    """``"10m"`` -> ``timedelta(minutes=10)``; numbers are seconds; anything else is left to pydantic.

    >>> parse_duration("1.5h"), parse_duration(90)
    (datetime.timedelta(seconds=5400), datetime.timedelta(seconds=90))
    """
    if isinstance(value, bool):
        raise ValueError("a duration cannot be a boolean")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return timedelta(milliseconds=float(m.group(1)) * _UNITS_MS[m.group(2)])
    return value


def duration_ms(d: timedelta) -> int:
    """Whole milliseconds of `d` (ValueError if it is not a positive whole number of them)."""
    us = d // timedelta(microseconds=1)
    if us <= 0 or us % 1000:
        raise ValueError(f"durations must be positive whole milliseconds, got {d}")
    return us // 1000


def format_duration(d: timedelta) -> str:
    """The shortest spelling used in feature names: ``10m``, ``1h``, ``24h``, ``7d``, ``90s``, ``500ms``.

    Days are used from 2 days on, so a day-long window reads ``24h``.

    >>> [format_duration(timedelta(seconds=s)) for s in (0.5, 90, 600, 3600, 86400, 7 * 86400)]
    ['500ms', '90s', '10m', '1h', '24h', '7d']
    """
    if d == timedelta(0):
        return "0s"
    ms = duration_ms(d)
    if ms % 86_400_000 == 0 and ms >= 2 * 86_400_000:
        return f"{ms // 86_400_000}d"
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json-unless-none"),
]


def default_tile_ms(window_ms: int) -> int:
    """Default tile size (ms) of a window: the largest "round" size (1s, 2s, 5s, ... 1h, 2h, ... 1d,
    7d) dividing it into at least 10 tiles; failing that, its largest divisor in whole ms that does.

    >>> [default_tile_ms(w * 60_000) // 60_000 for w in (10, 60, 1440)]
    [1, 5, 120]
    """
    limit = window_ms // MIN_TILES_PER_WINDOW
    for tile in _NICE_TILES_MS:
        if tile <= limit and window_ms % tile == 0:
            return tile
    for tile in range(limit, 0, -1):
        if window_ms % tile == 0:
            return tile
    return window_ms  # shorter than 10 ms: one tile


class Aggregation(BaseModel):
    """One aggregate of a source feature over one or more event-time windows.

    ``windows: []`` is a *lifetime* aggregate (every event of the entity so far, no time limit),
    named without a window suffix, e.g. ``amount_last``.

    >>> Aggregation(function="sum", source="amount", windows=["1h", "24h"]).names()
    ['amount_sum_1h', 'amount_sum_24h']
    >>> Aggregation(function="count", windows=["10m"]).names(), Aggregation(function="count").names()
    (['count_10m'], ['count'])
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: AggregationFunction
    source: str | None = None
    windows: list[Duration] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Aggregation:
        if self.source is None and self.function != "count":
            raise ValueError(f"{self.function} needs a source feature (only count may have none)")
        if self.source is not None and not _NAME.match(self.source):
            raise ValueError(f"bad source feature name {self.source!r}")
        for w in self.windows:
            duration_ms(w)
        if len(set(self.windows)) != len(self.windows):
            raise ValueError(f"{self.function} of {self.source}: a window is listed twice")
        return self

    def name(self, window: timedelta | None) -> str:
        """Feature name of this aggregate over `window` (None: lifetime)."""
        stem = self.function if self.source is None else f"{self.source}_{self.function}"
        return stem if window is None else f"{stem}_{format_duration(window)}"

    def names(self) -> list[str]:
        if not self.windows:
            return [self.name(None)]
        return [self.name(w) for w in self.windows]


class TileGroup(BaseModel):
    """The tiles of one tile size: which windows use them and how many an entity keeps at most."""

    model_config = ConfigDict(frozen=True)

    tile: Duration
    windows: list[Duration]
    max_tiles: int


class FeatureView(BaseModel):
    """Passthrough features plus windowed aggregates, per entity.

    * ``categorical``: features whose values are categories (strings). A categorical passthrough
      feature is NaN in the numeric feature matrix and returned as strings on the side; only
      ``count`` and ``distinct_count`` may aggregate a categorical feature.
    * ``tiles``: tile size per window, overriding the default (`default_tile_ms`: 10 min -> 1 min,
      1 h -> 5 min, 24 h -> 2 h). The tile must divide the window.
    * ``allowed_lateness``: an event older than the entity's newest event time by more than this
      is rejected (not applied).
    * ``distinct_capacity`` (1..62): distinct values an entity tracks per distinct-counted feature;
      ``distinct_count`` is exact up to it (see `feature_store.engine`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    passthrough: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    aggregations: list[Aggregation] = Field(default_factory=list)
    tiles: dict[Duration, Duration] = Field(default_factory=dict)
    allowed_lateness: Duration = timedelta(minutes=10)
    distinct_capacity: int = Field(default=32, ge=1, le=62)

    @model_validator(mode="after")
    def _check(self) -> FeatureView:
        if not _NAME.match(self.name):
            raise ValueError(f"bad view name {self.name!r}: use letters, digits, '_', '-', '.'")
        for feature in self.passthrough + self.categorical:
            if not _NAME.match(feature):
                raise ValueError(f"bad feature name {feature!r}")
        if self.allowed_lateness < timedelta(0):
            raise ValueError("allowed_lateness must be >= 0")
        categorical = set(self.categorical)
        for agg in self.aggregations:
            if agg.function in NUMERIC_FUNCTIONS and agg.source in categorical:
                raise ValueError(f"{agg.function} of {agg.source!r}: the feature is categorical")
        names = self.feature_names()
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names given twice: {', '.join(dupes)}")
        windows = set(self.windows())
        for window, tile in self.tiles.items():
            if window not in windows:
                raise ValueError(f"tiles: no aggregation uses the window {format_duration(window)}")
            if duration_ms(window) % duration_ms(tile):
                raise ValueError(
                    f"tiles: {format_duration(tile)} does not divide the window {format_duration(window)}"
                )
        return self

    # -- names and tiles ------------------------------------------------------------------------

    def feature_names(self) -> list[str]:
        """Passthrough features, then every aggregate in declaration order (windows as listed)."""
        return list(self.passthrough) + [n for agg in self.aggregations for n in agg.names()]

    def windows(self) -> list[timedelta]:
        """Every window used, shortest first."""
        return sorted({w for agg in self.aggregations for w in agg.windows})

    def tile_size(self, window: timedelta) -> timedelta:
        """The tile size of `window` (the ``tiles`` override, else `default_tile_ms`)."""
        if window in self.tiles:
            return self.tiles[window]
        return timedelta(milliseconds=default_tile_ms(duration_ms(window)))

    def tile_groups(self) -> list[TileGroup]:
        """Windows grouped by tile size, with the most tiles an entity keeps for each size:
        ``tiles in the longest window + ceil(allowed_lateness / tile) + 1``.

        >>> [(format_duration(g.tile), g.max_tiles) for g in fraud_feature_view().tile_groups()]
        [('1m', 21), ('5m', 15), ('2h', 14)]
        """
        by_tile: dict[timedelta, list[timedelta]] = {}
        for w in self.windows():
            by_tile.setdefault(self.tile_size(w), []).append(w)
        lateness_ms = self.allowed_lateness // timedelta(milliseconds=1)
        groups = []
        for tile, windows in sorted(by_tile.items()):
            tile_ms = duration_ms(tile)
            k = max(duration_ms(w) // tile_ms for w in windows)
            groups.append(
                TileGroup(tile=tile, windows=windows, max_tiles=k + math.ceil(lateness_ms / tile_ms) + 1)
            )
        return groups

    def fingerprint(self) -> str:
        """Short hash of the definition; entity states written under another definition are refused."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    # -- YAML -----------------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str) -> FeatureView:
        """Parse one view from YAML text (a mapping with the model's fields)."""
        return cls.model_validate(yaml.safe_load(text))

    @classmethod
    def from_file(cls, path: str | Path) -> FeatureView:
        return cls.from_yaml(Path(path).read_text())

    def to_yaml(self) -> str:
        data: dict[str, Any] = self.model_dump(mode="json")
        return yaml.safe_dump(data, sort_keys=False)


# The synthetic fraud stream's raw features (kept here: feature_store never imports stream/).
FRAUD_NUMERIC = [
    "amount",
    "hour",
    "distance_from_home",
    "distance_from_last_txn",
    "ratio_to_median_amount",
    "merchant_risk",
    "account_age_days",
    "card_present",
    "used_chip",
    "used_pin",
    "online_order",
    "device_trust_score",
]
FRAUD_CATEGORICAL = ["merchant_category", "country"]


def fraud_feature_view() -> FeatureView:
    """The view of the synthetic fraud model: its 14 raw features plus card-level aggregates.

    >>> view = fraud_feature_view()
    >>> len(view.feature_names()), view.feature_names()[14:18]
    (28, ['count_10m', 'count_1h', 'count_24h', 'amount_mean_1h'])
    """
    day, hour, ten = timedelta(hours=24), timedelta(hours=1), timedelta(minutes=10)
    return FeatureView(
        name="fraud",
        passthrough=FRAUD_NUMERIC + FRAUD_CATEGORICAL,
        categorical=FRAUD_CATEGORICAL,
        aggregations=[
            Aggregation(function="count", windows=[ten, hour, day]),
            Aggregation(function="mean", source="amount", windows=[hour, day]),
            Aggregation(function="sum", source="amount", windows=[hour, day]),
            Aggregation(function="max", source="amount", windows=[hour, day]),
            Aggregation(function="min", source="distance_from_home", windows=[day]),
            Aggregation(function="max", source="distance_from_home", windows=[day]),
            Aggregation(function="last", source="amount"),
            Aggregation(function="distinct_count", source="merchant_category", windows=[day]),
            Aggregation(function="distinct_count", source="country", windows=[day]),
        ],
    )
