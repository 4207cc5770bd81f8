"""Feature encoding shared by training and serving: columns of raw values -> float32 matrix.

Each numeric or boolean feature is one column (true = 1, false = 0; missing -> the spec's
``fill_value``); each categorical
feature is one one-hot column per category, in the spec's order (unseen or missing -> zeros).
A feature absent from ``columns`` counts as missing on every row.

>>> specs = [FeatureSpec(name="amount", kind="numeric", fill_value=10.0),
...          FeatureSpec(name="country", kind="categorical", categories=["DE", "FR"])]
>>> encode_features(specs, {"amount": [1.5, None, "x"], "country": ["FR", "US", None]}, 3)
array([[ 1.5,  0. ,  1. ],
       [10. ,  0. ,  0. ],
       [10. ,  0. ,  0. ]], dtype=float32)
>>> encoded_width(specs), encoded_names(specs)
(3, ['amount', 'country=DE', 'country=FR'])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat

import numpy as np

from inference.metadata import FeatureSpec

Cell = float | int | str | None
Column = Sequence[Cell] | np.ndarray

# Python and numpy scalar types read as numbers; anything else (str, None, ...) in a numeric
# feature is missing. Strings are never coerced to numbers, as in the event contract.
_NUMBER_TYPES: dict[type, bool] = dict.fromkeys(
    (
        float,
        int,
        bool,
        np.float64,
        np.float32,
        np.float16,
        np.int64,
        np.int32,
        np.int16,
        np.int8,
        np.uint64,
        np.uint32,
        np.uint16,
        np.uint8,
        np.bool_,
    ),
    True,
)


def encoded_width(specs: Iterable[FeatureSpec]) -> int:
    """Number of columns `encode_features` produces for `specs`."""
    return sum(s.width for s in specs)


def encoded_names(specs: Iterable[FeatureSpec]) -> list[str]:
    """Names of the encoded columns: ``name`` for numeric, ``name=category`` for one-hot columns."""
    out: list[str] = []
    for s in specs:
        out.extend([s.name] if s.kind != "categorical" else [f"{s.name}={c}" for c in s.categories])
    return out


def _check_length(name: str, col: Column, n: int) -> None:
    if len(col) != n:
        raise ValueError(f"feature {name!r} has {len(col)} values, expected {n}")


def numeric_values(col: Column, n: int) -> np.ndarray:
    """float64 values of a raw column, NaN where missing (None, NaN, ±inf, strings, other types).

    >>> numeric_values([1, None, "2", float("nan"), 3.5], 5)
    array([1. , nan, nan, nan, 3.5])
    """
    if isinstance(col, np.ndarray) and col.dtype.kind in "fiub":
        values = col.astype(np.float64)  # copy: never modify the caller's array
    else:
        cells = np.fromiter(col, dtype=object, count=n)
        is_number = np.fromiter(map(_NUMBER_TYPES.get, map(type, cells), repeat(False)), dtype=bool, count=n)
        values = np.full(n, np.nan)
        values[is_number] = cells[is_number].astype(np.float64)
    values[~np.isfinite(values)] = np.nan
    return values


def category_codes(col: Column, categories: Sequence[str], n: int) -> np.ndarray:
    """int64 index of each cell in `categories`, -1 when missing or unseen.

    >>> category_codes(["b", "z", None, "a"], ["a", "b"], 4)
    array([ 1, -1, -1,  0])
    """
    lookup: dict[object, int] = {c: i for i, c in enumerate(categories)}
    if isinstance(col, np.ndarray) and col.dtype.kind in "fiub":
        return np.full(n, -1, dtype=np.int64)  # numbers are never categories
    cells: Iterable[object] = col.tolist() if isinstance(col, np.ndarray) else col
    return np.fromiter(map(lookup.get, cells, repeat(-1)), dtype=np.int64, count=n)


def encode_features(specs: Sequence[FeatureSpec], columns: Mapping[str, Column], n: int) -> np.ndarray:
    """Encode `n` rows of raw feature columns into a float32 matrix of shape ``[n, encoded_width(specs)]``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = np.zeros((n, encoded_width(specs)), dtype=np.float32)
    offset = 0
    for spec in specs:
        col = columns.get(spec.name)
        if col is not None:
            _check_length(spec.name, col, n)
        if spec.kind != "categorical":  # numeric, or boolean as 0/1
            if col is None:
                out[:, offset] = spec.fill_value
            else:
                values = numeric_values(col, n)
                out[:, offset] = np.where(np.isnan(values), spec.fill_value, values)
        elif col is not None and spec.categories:
            codes = category_codes(col, spec.categories, n)
            seen = codes >= 0
            out[np.flatnonzero(seen), offset + codes[seen]] = 1.0
        offset += spec.width
    return out
