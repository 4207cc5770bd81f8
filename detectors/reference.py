"""Reference distributions and the bins PSI and the window store count in.

`Reference` mirrors what the detectors need of a model's reference distribution (the wiring layer
converts ``inference.metadata.Distribution`` into it): a numeric ``sample`` of non-missing values
or categorical ``frequencies`` (shares among non-missing values), the ``missing_rate`` and the
number of rows it was computed from (``count``).

`Binning` maps raw values to bin indices, vectorised:

* numeric: ``n_bins`` (default 10) quantile bins of the reference sample. The inner edges are the
  unique sample quantiles at 1/n, ..., (n-1)/n, taken as sample values (``method="lower"``, no
  interpolation), so ties merge bins and a 0/1 feature gets the edges [0, 1];
  the outer edges are -inf and +inf. Bin ``i`` holds ``edges[i-1] <= x < edges[i]``
  (``np.searchsorted(edges, x, side="right")``). Infinite values fall in the outer bins.
* categorical: one bin per reference category (sorted), then an **unseen** bin for anything else.
* both: a last **missing** bin for None and NaN. A categorical value that is not a string (say
  a number) is not coerced: it lands in the unseen bin.

Reference proportions per bin (`Binning.reference_proportions`): numeric value bins get the share
of the reference sample that falls in them times ``1 - missing_rate`` (computed by binning the
sample itself, so ties are exact, not assumed 1/n); categorical bins get their frequency times
``1 - missing_rate``, the unseen bin gets the mass the listed categories do not cover (including
an ``other_category`` catch-all entry such as training's ``__other__``); the missing bin gets
``missing_rate``.

PSI smoothing (`smooth`): both the window's and the reference's proportions become
``(p + eps) / (1 + n_bins * eps)`` with ``eps = 1e-4`` before ``sum((w - r) * ln(w / r))``, so an
empty bin costs a bounded amount instead of infinity: a category unseen in the reference that takes
10% of a window adds about ``0.1 * ln(0.1 / 1e-4) = 0.69`` (critical on its own), while a bin that
is empty on both sides adds exactly 0.

>>> ref = Reference(kind="numeric", sample=[float(i) for i in range(100)], missing_rate=0.1, count=100)
>>> b = Binning.from_reference(ref, n_bins=4)
>>> b.edges.tolist(), b.n_bins, b.labels[-1]
([24.0, 49.0, 74.0], 5, 'missing')
>>> b.bin_indices(np.array([-5.0, 30.0, np.nan, 1e9])).tolist()
[0, 1, 4, 3]
>>> b.reference_proportions.round(3).tolist()
[0.216, 0.225, 0.225, 0.234, 0.1]
>>> cat = Reference(kind="categorical", frequencies={"DE": 0.7, "FR": 0.3}, count=10)
>>> cb = Binning.from_reference(cat)
>>> cb.labels, cb.counts(np.array(["FR", "US", None, "FR", 3.0], dtype=object)).tolist()
(['DE', 'FR', 'unseen', 'missing'], [0, 2, 2, 1])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise, repeat
from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

EPS = 1e-4
"""Additive smoothing of PSI proportions (see the module docstring)."""
DEFAULT_BINS = 10
_NONE = np.array(None, dtype=object)
MISSING_LABEL = "missing"
UNSEEN_LABEL = "unseen"


class Reference(BaseModel):
    """A feature's reference distribution, as the detectors need it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["numeric", "categorical"]
    sample: list[float] = Field(default_factory=list)
    frequencies: dict[str, float] = Field(default_factory=dict)
    missing_rate: float = Field(0.0, ge=0.0, le=1.0)
    count: int = Field(0, ge=0)
    other_category: str | None = None
    """A key of `frequencies` standing for every category not listed; its share goes to the unseen bin."""

    @model_validator(mode="after")
    def _fits_kind(self) -> Self:
        if self.kind == "numeric":
            if self.frequencies:
                raise ValueError("a numeric reference has a sample, not frequencies")
            if not all(math.isfinite(v) for v in self.sample):
                raise ValueError(
                    "a numeric reference sample holds finite values only (missing: missing_rate)"
                )
        else:
            if self.sample:
                raise ValueError("a categorical reference has frequencies, not a sample")
            if any(not (math.isfinite(v) and v >= 0.0) for v in self.frequencies.values()):
                raise ValueError("category frequencies must be finite and >= 0")
        return self

    @property
    def n(self) -> int:
        """Reference size used in statistics: ``count`` if set, else the sample length."""
        return self.count or len(self.sample)

    @classmethod
    def from_values(
        cls, values: Sequence[Any] | np.ndarray, max_sample: int = 5000, seed: int = 0
    ) -> Reference:
        """Build a reference from raw values (numbers -> numeric, strings -> categorical).

        >>> Reference.from_values([1.0, None, 3.0, float("nan")]).missing_rate
        0.5
        >>> Reference.from_values(["a", "b", "a", None]).frequencies
        {'a': 0.6666666666666666, 'b': 0.3333333333333333}
        """
        arr = np.asarray(values, dtype=object)
        missing = is_missing(arr)
        present = arr[~missing]
        n = len(arr)
        missing_rate = float(missing.mean()) if n else 0.0
        if present.size and all(isinstance(v, str) for v in present):
            labels, counts = np.unique(present.astype(str), return_counts=True)
            shares = counts / counts.sum()
            freqs = {str(k): float(v) for k, v in zip(labels, shares, strict=True)}
            return cls(kind="categorical", frequencies=freqs, missing_rate=missing_rate, count=n)
        nums = present.astype(float)
        nums = nums[np.isfinite(nums)]
        if nums.size > max_sample:
            nums = np.random.default_rng(seed).choice(nums, size=max_sample, replace=False)
        return cls(kind="numeric", sample=nums.tolist(), missing_rate=missing_rate, count=n)

    def sorted_sample(self) -> np.ndarray:
        """The numeric sample as a sorted float64 array."""
        return np.sort(np.asarray(self.sample, dtype=np.float64))

    def std(self) -> float:
        """Sample standard deviation of the numeric sample (0.0 if fewer than 2 values)."""
        return float(np.std(self.sample, ddof=1)) if len(self.sample) > 1 else 0.0


def is_missing(values: np.ndarray) -> np.ndarray:
    """Boolean mask of missing entries: None or NaN (float arrays: NaN only).

    >>> is_missing(np.array([1.0, None, float("nan"), "x"], dtype=object)).tolist()
    [False, True, True, False]
    """
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind != "O":
        return np.zeros(values.shape, dtype=bool)
    # Element-wise comparisons run in C: None is None, NaN is the only value unequal to itself.
    mask: np.ndarray = np.equal(values, _NONE) | np.not_equal(values, values)
    return mask


def as_float(values: np.ndarray) -> np.ndarray:
    """Numeric values as float64; in object arrays None and non-numbers (strings, bools) become NaN.

    >>> as_float(np.array([1, None, "x", 2.5], dtype=object)).tolist()
    [1.0, nan, nan, 2.5]
    """
    if values.dtype.kind in "fiub":  # a bool array (e.g. errors = pred != label) is 0/1
        return values.astype(np.float64, copy=False)
    items = values.tolist()
    if values.dtype.kind == "O" and set(map(type, items)) <= _NUMBER_TYPES:  # numbers and None: in C
        out: np.ndarray = np.where(np.equal(values, _NONE), np.nan, values).astype(np.float64)
        return out
    result = np.full(len(items), np.nan)
    for i, v in enumerate(items):
        if isinstance(v, int | float) and not isinstance(v, bool):
            result[i] = float(v)
    return result


_NUMBER_TYPES = {int, float, type(None)}


class Binning:
    """Vectorised value -> bin index map for one feature (layout in the module docstring)."""

    def __init__(
        self,
        kind: Literal["numeric", "categorical"],
        edges: np.ndarray | None = None,
        categories: Sequence[str] = (),
        reference_proportions: np.ndarray | None = None,
    ) -> None:
        self.kind = kind
        self.edges = np.asarray(edges if edges is not None else [], dtype=np.float64)
        self.categories = list(categories)
        self._lookup = {c: i for i, c in enumerate(self.categories)}
        self._table: dict[Any, int] = {**self._lookup, None: len(self.categories) + 1}
        if kind == "numeric":
            self.n_value_bins = len(self.edges) + 1
            self.unseen_bin: int | None = None
            self.labels = [*_interval_labels(self.edges), MISSING_LABEL]
        else:
            self.n_value_bins = len(self.categories)
            self.unseen_bin = len(self.categories)
            self.labels = [*self.categories, UNSEEN_LABEL, MISSING_LABEL]
        self.n_bins = len(self.labels)
        self.missing_bin = self.n_bins - 1
        props = reference_proportions
        self.reference_proportions = (
            np.asarray(props, dtype=np.float64)
            if props is not None
            else np.full(self.n_bins, 1 / self.n_bins)
        )
        if self.reference_proportions.shape != (self.n_bins,):
            raise ValueError(f"expected {self.n_bins} reference proportions")

    @classmethod
    def from_reference(cls, ref: Reference, n_bins: int = DEFAULT_BINS) -> Binning:
        """Bins and reference proportions of `ref` (numeric: `n_bins` quantile bins)."""
        if ref.kind == "numeric":
            sample = ref.sorted_sample()
            if sample.size and n_bins > 1:
                qs = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
                edges = np.unique(np.quantile(sample, qs, method="lower"))
            else:
                edges = np.empty(0)
            binning = cls("numeric", edges=edges)
            if sample.size:
                value = np.bincount(np.searchsorted(edges, sample, side="right"), minlength=len(edges) + 1)
                value_props = value / sample.size
            else:
                value_props = np.full(len(edges) + 1, 1.0 / (len(edges) + 1))
            props = np.append(value_props * (1.0 - ref.missing_rate), ref.missing_rate)
            binning.reference_proportions = props
            return binning
        freqs = {k: v for k, v in ref.frequencies.items() if k != ref.other_category}
        categories = sorted(freqs)
        total = sum(ref.frequencies.values())
        shares = np.array([freqs[c] for c in categories], dtype=np.float64)
        if total > 1.0:  # not shares: normalise counts
            shares = shares / total
        unseen = max(0.0, 1.0 - float(shares.sum()))
        present = 1.0 - ref.missing_rate
        props = np.concatenate([shares * present, [unseen * present, ref.missing_rate]])
        return cls("categorical", categories=categories, reference_proportions=props)

    def bin_indices(self, values: np.ndarray) -> np.ndarray:
        """Bin index (int64) of each value."""
        values = np.asarray(values)
        if self.kind == "numeric":
            x = as_float(values)
            idx = np.searchsorted(self.edges, x, side="right").astype(np.int64)
            idx[np.isnan(x)] = self.missing_bin
            return idx
        unseen = self.unseen_bin
        items = values.tolist()
        try:  # dict lookups in C; None -> missing via the table, NaN and oddities fixed below
            idx = np.fromiter(map(self._table.get, items, repeat(unseen)), dtype=np.int64, count=len(items))
        except TypeError:  # an unhashable value: slow path
            idx = np.fromiter(map(self._one, items), dtype=np.int64, count=len(items))
            return idx
        if values.dtype.kind != "U":  # NaN (in object or float arrays) is missing, not unseen
            for i in np.flatnonzero(idx == unseen).tolist():
                idx[i] = self._one(items[i])
        return idx

    def _one(self, v: Any) -> int:
        if isinstance(v, str):
            return self._lookup.get(v, self.n_value_bins)
        if v is None or (isinstance(v, float) and v != v):
            return self.missing_bin
        return self.n_value_bins  # a non-string value: unseen

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Events per bin (int64, length `n_bins`)."""
        return np.bincount(self.bin_indices(values), minlength=self.n_bins).astype(np.int64)


def _interval_labels(edges: np.ndarray) -> list[str]:
    bounds = [-math.inf, *edges.tolist(), math.inf]
    return [f"[{lo:.6g}, {hi:.6g})" for lo, hi in pairwise(bounds)]


def smooth(proportions: np.ndarray, eps: float = EPS) -> np.ndarray:
    """``(p + eps) / (1 + k * eps)`` along the last axis (k = number of bins): no zero, still sums to 1.

    >>> smooth(np.array([0.0, 1.0]), eps=0.5).tolist()
    [0.25, 0.75]
    """
    k = proportions.shape[-1]
    return (proportions + eps) / (1.0 + k * eps)
