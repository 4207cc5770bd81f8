"""Feature view definitions: names, tiles, loading from dicts and YAML, validation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from feature_store.definitions import Aggregation, FeatureView, format_duration, fraud_feature_view
from stream.synthetic import CATEGORICAL_FEATURES, NUMERIC_FEATURES

YAML = """
name: cards
passthrough: [amount, country]
categorical: [country]
allowed_lateness: 5m
distinct_capacity: 16
tiles: {24h: 1h}
aggregations:
  - {function: count, windows: [10m, 1h, 24h]}
  - {function: mean, source: amount, windows: [1h, 24h]}
  - {function: min, source: amount, windows: [PT24H]}
  - {function: last, source: amount}
  - {function: distinct_count, source: country, windows: [86400]}
"""


def test_feature_names_are_stable_and_readable() -> None:
    view = FeatureView.from_yaml(YAML)
    assert view.feature_names() == [
        "amount",
        "country",
        "count_10m",
        "count_1h",
        "count_24h",
        "amount_mean_1h",
        "amount_mean_24h",
        "amount_min_24h",
        "amount_last",
        "country_distinct_count_24h",
    ]
    assert view.allowed_lateness == timedelta(minutes=5) and view.distinct_capacity == 16


def test_a_view_loads_from_a_dict_a_yaml_file_and_round_trips(tmp_path: Path) -> None:
    view = FeatureView.from_yaml(YAML)
    path = tmp_path / "view.yaml"
    path.write_text(view.to_yaml())
    assert FeatureView.from_file(path) == view
    assert FeatureView.model_validate(view.model_dump(mode="json")) == view
    assert FeatureView.model_validate_json(view.model_dump_json()) == view
    assert "allowed_lateness: 5m" in view.to_yaml()


def test_tiles_default_to_round_sizes_and_bound_the_state() -> None:
    view = FeatureView.from_yaml(YAML)
    assert [format_duration(view.tile_size(w)) for w in view.windows()] == ["1m", "5m", "1h"]
    groups = view.tile_groups()
    # tiles of the longest window + lateness (5 min) in tiles, rounded up, + 1
    assert [(format_duration(g.tile), g.max_tiles) for g in groups] == [("1m", 16), ("5m", 14), ("1h", 26)]


def test_the_fraud_view_covers_the_synthetic_stream() -> None:
    view = fraud_feature_view()
    assert view.passthrough == NUMERIC_FEATURES + CATEGORICAL_FEATURES
    assert view.categorical == CATEGORICAL_FEATURES
    names = view.feature_names()
    for name in [
        "count_10m",
        "count_1h",
        "count_24h",
        "amount_mean_1h",
        "amount_sum_24h",
        "amount_max_1h",
        "distance_from_home_min_24h",
        "amount_last",
        "merchant_category_distinct_count_24h",
    ]:
        assert name in names
    assert len(names) == len(set(names)) == 28


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"aggregations": [{"function": "sum", "windows": ["1h"]}]}, "sum needs a source"),
        ({"aggregations": [{"function": "mean", "source": "country"}]}, "the feature is categorical"),
        ({"aggregations": [{"function": "count", "windows": ["1h", "60m"]}]}, "a window is listed twice"),
        (
            {"aggregations": [{"function": "count", "windows": ["1h"]}], "tiles": {"1h": "7m"}},
            "does not divide",
        ),
        ({"tiles": {"2h": "1h"}}, "no aggregation uses the window 2h"),
        ({"passthrough": ["amount", "amount"]}, "given twice: amount"),
        ({"aggregations": [{"function": "count", "windows": ["0s"]}]}, "positive whole milliseconds"),
        ({"aggregations": [{"function": "median", "source": "amount"}]}, "function"),
        ({"name": "bad name"}, "bad view name"),
        ({"distinct_capacity": 63}, "less than or equal to 62"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_definitions_are_refused_with_a_reason(change: dict[str, object], message: str) -> None:
    base = {"name": "v", "passthrough": ["amount", "country"], "categorical": ["country"]}
    with pytest.raises(ValidationError, match=message):
        FeatureView.model_validate({**base, **change})


def test_durations_are_spelled_as_in_feature_names() -> None:
    spelled = [format_duration(timedelta(seconds=s)) for s in (0.25, 45, 600, 5400, 86400, 172800)]
    assert spelled == ["250ms", "45s", "10m", "90m", "24h", "2d"]
    assert Aggregation(function="count", windows=["1.5h"]).names() == ["count_90m"]


def test_the_fingerprint_follows_the_definition() -> None:
    view = fraud_feature_view()
    assert view.fingerprint() == fraud_feature_view().fingerprint()
    assert (
        view.fingerprint() != view.model_copy(update={"allowed_lateness": timedelta(minutes=1)}).fingerprint()
    )
