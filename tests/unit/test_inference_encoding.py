"""Feature encoding: the one contract shared by training and the streaming worker."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.encoding import category_codes, encode_features, encoded_names, encoded_width, numeric_values
from inference.metadata import FeatureSpec

AMOUNT = FeatureSpec(name="amount", kind="numeric", fill_value=7.5)
HOUR = FeatureSpec(name="hour", kind="numeric", fill_value=-1.0)
COUNTRY = FeatureSpec(name="country", kind="categorical", categories=["DE", "FR", "US"])
SPECS = [AMOUNT, COUNTRY, HOUR]


def test_layout_follows_spec_order_and_widths() -> None:
    X = encode_features(SPECS, {"amount": [1.0, 2.0], "country": ["US", "DE"], "hour": [3, 4]}, 2)
    assert X.dtype == np.float32
    assert X.shape == (2, encoded_width(SPECS)) == (2, 5)
    assert encoded_names(SPECS) == ["amount", "country=DE", "country=FR", "country=US", "hour"]
    np.testing.assert_array_equal(X, [[1, 0, 0, 1, 3], [2, 1, 0, 0, 4]])


def test_numeric_missing_values_become_the_fill_value() -> None:
    col = [1.25, None, float("nan"), "12", "abc", math.inf, -math.inf, 0, -3]
    X = encode_features([AMOUNT], {"amount": col}, len(col))
    np.testing.assert_array_equal(X[:, 0], [1.25, 7.5, 7.5, 7.5, 7.5, 7.5, 7.5, 0, -3])


def test_numeric_arrays_are_used_directly_and_not_modified() -> None:
    col = np.array([1.0, np.nan, np.inf, 4.0])
    X = encode_features([AMOUNT], {"amount": col}, 4)
    np.testing.assert_array_equal(X[:, 0], [1.0, 7.5, 7.5, 4.0])
    assert np.isinf(col[2]) and np.isnan(col[1])  # the caller's array is untouched
    ints = np.array([3, 5], dtype=np.int64)
    np.testing.assert_array_equal(encode_features([AMOUNT], {"amount": ints}, 2)[:, 0], [3, 5])


def test_numpy_scalars_and_object_arrays_are_numbers() -> None:
    col = np.array([np.float32(1.5), np.int64(2), None, "x"], dtype=object)
    np.testing.assert_array_equal(numeric_values(col, 4), [1.5, 2.0, np.nan, np.nan])


def test_categorical_one_hot_with_unseen_and_missing_as_zeros() -> None:
    col = ["FR", "BR", None, "US", "fr", 3, "DE"]
    X = encode_features([COUNTRY], {"country": col}, len(col))
    np.testing.assert_array_equal(
        X,
        [[0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0], [1, 0, 0]],
    )
    assert X.sum(axis=1).max() == 1


@pytest.mark.parametrize(
    "col",
    [np.array(["US", "XX", "DE"]), np.array(["US", None, "DE"], dtype=object), ("US", "XX", "DE")],
    ids=["str-array", "object-array", "tuple"],
)
def test_categorical_accepts_arrays_and_sequences(col: object) -> None:
    X = encode_features([COUNTRY], {"country": col}, 3)  # type: ignore[dict-item]
    np.testing.assert_array_equal(X, [[0, 0, 1], [0, 0, 0], [1, 0, 0]])


def test_numbers_are_never_categories() -> None:
    spec = FeatureSpec(name="code", kind="categorical", categories=["1", "2"])
    assert category_codes(np.array([1, 2]), spec.categories, 2).tolist() == [-1, -1]
    assert category_codes([1, "2"], spec.categories, 2).tolist() == [-1, 1]


def test_a_feature_absent_from_the_columns_is_missing_everywhere() -> None:
    X = encode_features(SPECS, {"hour": [5, 6, 7]}, 3)
    np.testing.assert_array_equal(X, [[7.5, 0, 0, 0, 5], [7.5, 0, 0, 0, 6], [7.5, 0, 0, 0, 7]])


def test_extra_columns_are_ignored() -> None:
    X = encode_features([HOUR], {"hour": [1], "other": ["x"]}, 1)
    np.testing.assert_array_equal(X, [[1.0]])


def test_zero_rows_and_zero_width_categoricals() -> None:
    assert encode_features(SPECS, {}, 0).shape == (0, 5)
    empty = FeatureSpec(name="c", kind="categorical")
    assert encoded_width([empty, AMOUNT]) == 1
    np.testing.assert_array_equal(encode_features([empty, AMOUNT], {"c": ["x"], "amount": [2]}, 1), [[2.0]])


def test_column_length_must_match_n() -> None:
    with pytest.raises(ValueError, match=r"feature 'amount' has 2 values, expected 3"):
        encode_features([AMOUNT], {"amount": [1.0, 2.0]}, 3)
    with pytest.raises(ValueError, match="expected 1"):
        encode_features([COUNTRY], {"country": ["US", "DE"]}, 1)


def test_large_batch_matches_a_per_row_reference() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    amounts: list[float | str | None] = [float(v) for v in rng.normal(size=n)]
    countries: list[str | None] = list(rng.choice(["DE", "FR", "US", "BR"], size=n))
    for i in rng.choice(n, size=500, replace=False):
        amounts[i] = None
        countries[i] = None
    X = encode_features([AMOUNT, COUNTRY], {"amount": amounts, "country": countries}, n)
    for i in rng.choice(n, size=200, replace=False):
        a, c = amounts[i], countries[i]
        expected = [7.5 if a is None else a] + [float(c == k) for k in COUNTRY.categories]
        np.testing.assert_allclose(X[i], expected, rtol=1e-6)
