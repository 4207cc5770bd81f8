"""The aggregation engine shared by the online store and historical replay.

`Engine.run` is the only implementation of every feature: `feature_store.online` runs it on
entity states read from Redis, `feature_store.historical` on states kept in memory, so the two
paths compute the same floating-point operations in the same order and agree bit for bit.

**State.** An entity's state is one fixed-size vector of 8-byte words (`Engine.width` of them):
its newest event time, the number of events applied, the newest event's numeric passthrough
values, then per tile size a *ring* of ``R`` tiles (``R = FeatureView.tile_groups()[i].max_tiles``)
holding, per tile, its index ``floor(ts / tile)`` and the accumulators (count, per source:
non-missing count, sum, min, max, newest time and value), plus a per-entity vocabulary of at most
``distinct_capacity`` values per distinct-counted feature (tiles hold bit masks over it).
Lifetime aggregates are one more ring with a single tile. Fixed size means a batch of states
is decoded and encoded with one numpy call, and memory per entity is bounded by construction.

**Processing.** Events are applied one at a time per entity, in the order given: the engine
processes *rounds* (the k-th event of every entity in the batch), each round vectorised over
entities. Per event: reject it if its time is not finite or is more than ``allowed_lateness``
before the entity's newest event time; else apply it to its tile (recycling the ring slot if it
held an older tile, which no acceptable event can reach any more) and read every window at the
event's own time. So an event's features never depend on how the log was cut into batches.

**Windows.** A window of ``k`` tiles read at time ``t`` covers tiles ``floor(t/tile) - k + 1 ..
floor(t/tile)``: the tile holding ``t``, taken whole, and the ``k - 1`` before it. A sum adds
the tiles' sums oldest tile first; a tile's sum adds its values in the order they were applied.

**distinct_count.** Each entity keeps a vocabulary of up to ``distinct_capacity`` (<= 62) values per
feature; a new value that finds it full first evicts the values no reachable tile holds any more
(reachable: tiles an acceptable event could still read). The count is exact while the entity's
reachable tiles (its window plus the lateness margin) hold at most ``distinct_capacity`` values;
beyond that it is a lower bound: the values that found the vocabulary full count as one more.

>>> from feature_store.definitions import Aggregation, FeatureView
>>> view = FeatureView(name="v", aggregations=[Aggregation(function="sum", source="x", windows=["10m"])])
>>> engine = Engine(view)
>>> states = engine.empty_states(1)
>>> out = engine.run(states, np.zeros(3, dtype=np.int64), np.array([0.0, 30.0, 900.0]),
...                  engine.columns({"x": [1.0, 2, None]}, 3))
>>> out.features[:, 0].tolist()  # the third event is 15 minutes later: the first two left its window
[1.0, 3.0, 0.0]
>>> late = engine.run(states, np.zeros(1, dtype=np.int64), np.array([100.0]), engine.columns({"x": [5.0]}, 1))
>>> print(late.rejected[0])
too late: event time 1970-01-01T00:01:40Z is 800.000s behind the entity's newest event time
1970-01-01T00:15:00Z (allowed lateness 600s)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import cast, overload

import numpy as np
import orjson

from feature_store.definitions import FeatureView, duration_ms

Cell = float | int | str | None
Column = Sequence[Cell] | np.ndarray

NAN = math.nan
INF = math.inf
EMPTY_TILE = np.iinfo(np.int64).min  # tag of a ring slot holding no tile
OVERFLOW_BIT = 62  # distinct masks: bit i < capacity = vocabulary entry i; bit 62 = "a value found it full"
STATE_FORMAT = 3
_PREFIX_LEN = 18  # b"F" + format byte + 16-character view fingerprint
_PADS = [bytes(k) for k in range(8)]

# Output kinds: a column total (count, sum), mean, min, max, last, distinct count.
_TOTAL, _MEAN, _MIN, _MAX, _LAST, _DISTINCT = range(6)


def iso(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC (``Z``), milliseconds shown only when not whole.

    >>> iso(0.0), iso(1.25)
    ('1970-01-01T00:00:00Z', '1970-01-01T00:00:01.250Z')
    """
    dt = datetime.fromtimestamp(ts, UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond // 1000:03d}"
    return text + "Z"


@lru_cache(maxsize=1 << 16)
def value_hash(value: str) -> int:
    """Stable non-zero 62-bit hash of a category (blake2b: the same in every process)."""
    return (int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big") >> 2) or 1


_NUMBER_TYPES = (float, int, np.floating, np.integer)
_PLAIN_NUMBERS = {float, int}


def as_number(value: object) -> float:
    """A raw value as a feature number: NaN when missing, not a number (str) or not finite;
    booleans are 1/0, as the model encoding reads them (`inference.encoding`).

    >>> as_number(3), as_number("3"), as_number(True), as_number(None)
    (3.0, nan, 1.0, nan)
    """
    if isinstance(value, bool | np.bool_):
        return 1.0 if value else 0.0
    if isinstance(value, _NUMBER_TYPES):
        number = float(value)
        return number if math.isfinite(number) else NAN
    return NAN


def as_category(value: object) -> str | None:
    """A raw value as a category: strings as they are, numbers as their float repr, else None.

    >>> as_category("DE"), as_category(7), as_category(None)
    ('DE', '7.0', None)
    """
    if isinstance(value, str):
        return value
    number = as_number(value)
    return None if number != number else repr(number)


def numeric_column(col: Column | None, n: int) -> np.ndarray:
    """A raw column as float64, NaN where missing (see `as_number`).

    >>> numeric_column([1, None, "2", True, 2.5], 5).tolist()
    [1.0, nan, nan, 1.0, 2.5]
    """
    if col is None:
        return np.full(n, NAN)
    if isinstance(col, np.ndarray) and col.dtype.kind in "fiu":
        arr = col.astype(np.float64)
    else:
        cells = col.tolist() if isinstance(col, np.ndarray) else col
        if set(map(type, cells)) <= _PLAIN_NUMBERS:  # the usual case: no None, str or bool
            arr = np.array(cells, dtype=np.float64)
        else:
            arr = np.fromiter(map(as_number, cells), dtype=np.float64, count=n)
    arr[~np.isfinite(arr)] = NAN
    return arr


def category_column(col: Column | None, n: int) -> list[str | None]:
    """A raw column as categories (see `as_category`)."""
    if col is None:
        return [None] * n
    cells = col.tolist() if isinstance(col, np.ndarray) else col
    return [v if type(v) is str else as_category(v) for v in cells]


@dataclass
class Columns:
    """A batch's raw values converted once: floats, categories and category hashes (0 = missing)."""

    n: int
    num: dict[str, np.ndarray]
    cat: dict[str, list[str | None]]
    hashes: dict[str, np.ndarray]
    passthrough: np.ndarray  # [n, numeric passthrough features]


@dataclass
class RunOutcome:
    """What `Engine.run` did with each item (index = position in the input)."""

    features: np.ndarray  # float64 [n, features]; NaN rows for rejected and skipped items
    categorical: dict[str, list[str | None]]  # categorical passthrough values per item
    applied: np.ndarray  # bool [n]
    rejected: dict[int, str] = field(default_factory=dict)
    newest: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # newest[e]: the item that last became entity row e's newest event (-1: none in this run)
    source: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # source[i] for a query: the item that was its entity's newest event then (-1: none in this run)


class _Group:
    """One ring of tiles of one tile size (or the lifetime tile) inside the state vector."""

    def __init__(
        self, engine: Engine, tile_s: float, ring: int, kmax: int, aggs: list[tuple[str, str | None]]
    ):
        self.tile_s, self.ring, self.kmax = tile_s, ring, kmax
        self.init: list[float] = []
        self.n_col = -1
        self.counted: list[tuple[str, int, bool]] = []
        self.numeric: dict[str, list[int]] = {}  # source -> [nn, sum, min, max] columns (-1: not kept)
        self.last: dict[str, tuple[int, int]] = {}
        self.distinct: list[str] = []
        for function, source in aggs:
            if source is None:
                if self.n_col < 0:
                    self.n_col = self._column(0.0)
            elif function == "count" and source not in {s for s, _, _ in self.counted}:
                self.counted.append((source, self._column(0.0), source in engine.categorical))
            elif function in ("sum", "mean", "min", "max"):
                cols = self.numeric.setdefault(source, [-1, -1, -1, -1])
                if function in ("sum", "mean") and cols[0] < 0:
                    cols[0], cols[1] = self._column(0.0), self._column(0.0)
                elif function == "min" and cols[2] < 0:
                    cols[2] = self._column(INF)
                elif function == "max" and cols[3] < 0:
                    cols[3] = self._column(-INF)
            elif function == "last" and source not in self.last:
                self.last[source] = (self._column(-INF), self._column(NAN))
            elif function == "distinct_count" and source not in self.distinct:
                self.distinct.append(source)
        self.n_cols = len(self.init)
        self.n_distinct = len(self.distinct)
        self.capacity = engine.capacity
        self.value_bits = (1 << self.capacity) - 1
        # (tiles k, outputs (kind, column, second column, feature position), accumulators read)
        self.windows: list[tuple[int, list[tuple[int, int, int, int]], list[int]]] = []
        # Offsets of this ring's parts in the state vector.
        self.off_tag = engine._allocate(ring)
        self.off_acc = engine._allocate(ring * self.n_cols)
        self.off_mask = engine._allocate(ring * self.n_distinct)
        self.off_voc = engine._allocate(self.n_distinct * self.capacity)

    def _column(self, init: float) -> int:
        self.init.append(init)
        return len(self.init) - 1

    def empty(self, vector: np.ndarray) -> None:
        ints = vector.view(np.int64)
        ints[self.off_tag : self.off_tag + self.ring] = EMPTY_TILE
        vector[self.off_acc : self.off_acc + self.ring * self.n_cols] = np.tile(self.init, self.ring)
        ints[self.off_mask : self.off_voc + self.n_distinct * self.capacity] = 0

    def tiles(self, t: np.ndarray) -> np.ndarray:
        if math.isinf(self.tile_s):
            return np.zeros(len(t), dtype=np.int64)
        return np.floor(t / self.tile_s).astype(np.int64)

    def reach(self, newest: np.ndarray, lateness_s: float) -> np.ndarray:
        """Oldest tile index an acceptable event can still read, per entity."""
        if math.isinf(self.tile_s):
            return np.zeros(len(newest), dtype=np.int64)
        return np.floor((newest - lateness_s) / self.tile_s).astype(np.int64) - self.kmax + 1

    # -- applying events -------------------------------------------------------------------------
    # ``f``/``fi``: the state matrix flattened (float64 / int64 views of the same words); ``base``:
    # each event's row offset in it (``entity row * width``). Entities differ within a round, so
    # every position written below is written once.

    def apply(
        self,
        f: np.ndarray,
        fi: np.ndarray,
        base: np.ndarray,
        t: np.ndarray,
        items: np.ndarray,
        cols: Columns,
        lateness_s: float,
    ) -> None:
        """Add events ``items`` (state rows at ``base``, times ``t``) to their tiles."""
        tau = self.tiles(t)
        slot = tau % self.ring
        tag_at = base + self.off_tag + slot
        stale = fi[tag_at] != tau
        if stale.any():  # the slot held no tile or an older one no acceptable event can read
            fi[tag_at[stale]] = tau[stale]
            s_base, s_slot = base[stale], slot[stale]
            if self.n_cols:
                at = (s_base + self.off_acc + s_slot * self.n_cols)[:, None] + np.arange(self.n_cols)
                f[at] = np.asarray(self.init)
            if self.n_distinct:
                fi[
                    (s_base + self.off_mask + s_slot * self.n_distinct)[:, None] + np.arange(self.n_distinct)
                ] = 0
        acc = base + self.off_acc + slot * self.n_cols
        if self.n_col >= 0:
            f[acc + self.n_col] += 1.0
        for source, c, is_cat in self.counted:
            present = cols.hashes[source][items] != 0 if is_cat else ~np.isnan(cols.num[source][items])
            f[acc + c] += present
        for source, (nn, sm, mn, mx) in self.numeric.items():
            v = cols.num[source][items]
            present = ~np.isnan(v)
            if nn >= 0:
                f[acc + nn] += present
                f[acc + sm] += np.where(present, v, 0.0)
            if mn >= 0:
                f[acc + mn] = np.fmin(f[acc + mn], v)
            if mx >= 0:
                f[acc + mx] = np.fmax(f[acc + mx], v)
        for source, (tc, vc) in self.last.items():
            v = cols.num[source][items]
            newer = ~np.isnan(v) & (t >= f[acc + tc])
            f[acc[newer] + tc] = t[newer]
            f[acc[newer] + vc] = v[newer]
        for d, source in enumerate(self.distinct):
            self._add_distinct(f, fi, base, slot, d, cols.hashes[source][items], lateness_s)

    def _add_distinct(
        self,
        f: np.ndarray,
        fi: np.ndarray,
        base: np.ndarray,
        slot: np.ndarray,
        d: int,
        h: np.ndarray,
        lateness_s: float,
    ) -> None:
        present = h != 0
        if not present.any():
            return
        base, slot, h = base[present], slot[present], h[present]
        voc_at = (base + self.off_voc + d * self.capacity)[:, None] + np.arange(self.capacity)
        voc = fi[voc_at]
        match = voc == h[:, None]
        found = match.any(axis=1)
        full = ~found & (voc != 0).all(axis=1)
        if full.any():  # forget the values no reachable tile holds, then look again
            rows = np.flatnonzero(full)
            ring = np.arange(self.ring)
            tags = fi[(base[rows] + self.off_tag)[:, None] + ring]
            masks = fi[(base[rows] + self.off_mask + d)[:, None] + ring * self.n_distinct]
            reachable = tags >= self.reach(f[base[rows]], lateness_s)[:, None]
            live = np.bitwise_or.reduce(np.where(reachable, masks, 0), axis=1)
            bits = np.left_shift(np.int64(1), np.arange(self.capacity, dtype=np.int64))
            voc[rows] = np.where((live[:, None] & bits) != 0, voc[rows], 0)
        free = voc == 0
        new = ~found & free.any(axis=1)
        bit = np.where(found, match.argmax(axis=1), np.where(new, free.argmax(axis=1), OVERFLOW_BIT))
        rows = np.flatnonzero(new)
        voc[rows, bit[rows]] = h[rows]
        fi[voc_at] = voc
        fi[base + self.off_mask + slot * self.n_distinct + d] |= np.left_shift(
            np.int64(1), bit.astype(np.int64)
        )

    # -- reading windows -------------------------------------------------------------------------

    def evaluate(
        self,
        f: np.ndarray,
        fi: np.ndarray,
        base: np.ndarray,
        t: np.ndarray,
        out: np.ndarray,
        rows: np.ndarray,
    ) -> None:
        """Write every window of this ring, read at times ``t``, into ``out[rows]``."""
        tau = self.tiles(t)
        init = np.asarray(self.init)
        for k, outputs, needed in self.windows:
            taus = tau + np.arange(-k + 1, 1)[:, None]  # [k, m]: oldest tile first
            slots = taus % self.ring
            valid = fi[base + self.off_tag + slots] == taus
            at = {c: j for j, c in enumerate(needed)}
            if needed:
                cols = np.asarray(needed)
                # [k, m, columns]: every accumulator the window's outputs read, empty tiles as init
                values = np.where(
                    valid[:, :, None],
                    f[(base + self.off_acc + slots * self.n_cols)[:, :, None] + cols],
                    init[cols],
                )
                totals = _fold(values)
            for kind, c1, c2, col in outputs:
                if kind == _TOTAL:
                    out[rows, col] = totals[:, at[c1]]
                elif kind == _MEAN:
                    nn = totals[:, at[c2]]
                    out[rows, col] = np.where(nn > 0, totals[:, at[c1]] / np.where(nn > 0, nn, 1.0), NAN)
                elif kind == _MIN:
                    low = values[:, :, at[c1]].min(axis=0)
                    out[rows, col] = np.where(low == INF, NAN, low)
                elif kind == _MAX:
                    high = values[:, :, at[c1]].max(axis=0)
                    out[rows, col] = np.where(high == -INF, NAN, high)
                elif kind == _LAST:
                    stamps = values[:, :, at[c1]]
                    newest = stamps.argmax(axis=0)  # tiles hold disjoint times: the newest tile wins
                    value = values[newest, np.arange(len(base)), at[c2]]
                    out[rows, col] = np.where(stamps.max(axis=0) == -INF, NAN, value)
                else:
                    masks = fi[base + self.off_mask + slots * self.n_distinct + c1]
                    union = np.bitwise_or.reduce(np.where(valid, masks, 0), axis=0)
                    count = np.bitwise_count(union & self.value_bits) + ((union >> OVERFLOW_BIT) & 1)
                    out[rows, col] = count.astype(np.float64)


def _window(
    k: int, outputs: list[tuple[int, int, int, int]]
) -> tuple[int, list[tuple[int, int, int, int]], list[int]]:
    needed = sorted({c for kind, c1, c2, _ in outputs if kind != _DISTINCT for c in (c1, c2) if c >= 0})
    return k, outputs, needed


def _fold(values: np.ndarray) -> np.ndarray:
    """Totals over the first axis (tiles), adding one tile at a time, oldest first."""
    total = values[0].copy()
    for j in range(1, len(values)):
        total += values[j]
    return total


class Tails(Sequence[list[str | None]]):
    """The newest event's categorical passthrough values of each decoded state, parsed from their
    packed JSON on first access (most are never read: an entity's next event replaces them)."""

    def __init__(self, n: int, width: int) -> None:
        self.blobs: Sequence[bytes | None] = [None] * n
        self.cut = np.full(n, -1, dtype=np.int64)  # where blob i's JSON starts (-1: none)
        self.fallback: Callable[[int], list[str | None] | None] | None = None  # for i without a blob
        self._width = width
        self._parsed: dict[int, list[str | None]] = {}

    def __len__(self) -> int:
        return len(self.cut)

    @overload
    def __getitem__(self, i: int) -> list[str | None]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[str | None]]: ...

    def __getitem__(self, i: int | slice) -> list[str | None] | list[list[str | None]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        found = self._parsed.get(i)
        if found is None:
            cut, blob = int(self.cut[i]), self.blobs[i]
            if cut >= 0 and blob is not None:
                found = orjson.loads(blob[cut:])
            else:
                found = (self.fallback(i) if self.fallback is not None else None) or [None] * self._width
            self._parsed[i] = found
        return found


class Engine:
    """A `FeatureView` compiled into a state-vector layout and vectorised update/read steps."""

    def __init__(self, view: FeatureView) -> None:
        self.view = view
        self.names = view.feature_names()
        self.n_features = len(self.names)
        self.fingerprint = view.fingerprint()
        self.lateness_s = view.allowed_lateness.total_seconds()
        self.capacity = view.distinct_capacity
        self.categorical = frozenset(view.categorical)
        self.passthrough = list(view.passthrough)
        self.pt_numeric = [(j, n) for j, n in enumerate(self.passthrough) if n not in self.categorical]
        self.pt_categorical = [n for n in self.passthrough if n in self.categorical]
        self._pt_cols = np.asarray([j for j, _ in self.pt_numeric], dtype=np.int64)
        self._pt_at = 2 + np.arange(len(self.pt_numeric))  # where the state keeps them
        self._prefix = b"F" + bytes([STATE_FORMAT]) + self.fingerprint.encode()
        self._prefix_v2 = b"F" + bytes([2]) + self.fingerprint.encode()  # dense states, still read
        self._prefix_bytes = np.frombuffer(self._prefix, dtype=np.uint8)
        self._prefix_v2_bytes = np.frombuffer(self._prefix_v2, dtype=np.uint8)

        sources = {a.source for a in view.aggregations if a.source is not None}
        self.hashed_inputs = sorted(
            {
                a.source
                for a in view.aggregations
                if a.source and (a.function == "distinct_count" or a.source in self.categorical)
            }
        )
        self.numeric_inputs = sorted(({n for _, n in self.pt_numeric} | sources) - self.categorical)
        self.inputs = (
            frozenset(self.numeric_inputs) | frozenset(self.hashed_inputs) | set(self.pt_categorical)
        )

        # State vector: [newest time, events applied, numeric passthrough of the newest event, rings...]
        self.width = 2 + len(self.pt_numeric)
        self.groups: list[_Group] = []
        column = {name: j for j, name in enumerate(self.names)}
        for group in view.tile_groups():
            tile_ms = duration_ms(group.tile)
            pairs = {
                w: [(a.function, a.source, a.name(w)) for a in view.aggregations if w in a.windows]
                for w in group.windows
            }
            g = _Group(
                self,
                tile_ms / 1000.0,
                group.max_tiles,
                max(duration_ms(w) // tile_ms for w in group.windows),
                [(f, s) for ps in pairs.values() for f, s, _ in ps],
            )
            g.windows = [
                _window(duration_ms(w) // tile_ms, self._outputs(g, ps, column)) for w, ps in pairs.items()
            ]
            self.groups.append(g)
        lifetime = [(a.function, a.source, a.name(None)) for a in view.aggregations if not a.windows]
        if lifetime:
            g = _Group(self, INF, 1, 1, [(f, s) for f, s, _ in lifetime])
            g.windows = [_window(1, self._outputs(g, lifetime, column))]
            self.groups.append(g)
        self._empty = np.zeros(self.width)
        self._empty[0] = NAN
        self._empty[2 : 2 + len(self.pt_numeric)] = NAN
        for g in self.groups:
            g.empty(self._empty)
        self._mask_bytes = (self.width + 7) // 8
        # Per ring: (group, its tag words, every word of its slots, the slot of each such word).
        self._slot_words: list[tuple[_Group, np.ndarray, np.ndarray, np.ndarray]] = []
        for g in self.groups:
            if math.isinf(g.tile_s):
                continue  # the lifetime tile is always readable
            slots = np.arange(g.ring)
            acc = g.off_acc + slots[:, None] * g.n_cols + np.arange(g.n_cols)
            mask = g.off_mask + slots[:, None] * g.n_distinct + np.arange(g.n_distinct)
            word_cols = np.concatenate([g.off_tag + slots, acc.ravel(), mask.ravel()])
            slot_of = np.concatenate([slots, np.repeat(slots, g.n_cols), np.repeat(slots, g.n_distinct)])
            self._slot_words.append((g, g.off_tag + slots, word_cols, slot_of))

    def _allocate(self, words: int) -> int:
        self.width += words
        return self.width - words

    @staticmethod
    def _outputs(
        g: _Group, pairs: Sequence[tuple[str, str | None, str]], column: dict[str, int]
    ) -> list[tuple[int, int, int, int]]:
        out = []
        for function, source, name in pairs:
            s = source or ""
            if function == "count":
                spec = (_TOTAL, g.n_col if source is None else next(c for n, c, _ in g.counted if n == s), -1)
            elif function == "sum":
                spec = (_TOTAL, g.numeric[s][1], -1)
            elif function == "mean":
                spec = (_MEAN, g.numeric[s][1], g.numeric[s][0])
            elif function == "min":
                spec = (_MIN, g.numeric[s][2], -1)
            elif function == "max":
                spec = (_MAX, g.numeric[s][3], -1)
            elif function == "last":
                spec = (_LAST, *g.last[s])
            else:
                spec = (_DISTINCT, g.distinct.index(s), -1)
            out.append((*spec, column[name]))
        return out

    # -- states ----------------------------------------------------------------------------------

    # A packed state (format 3): prefix (b"F", format, view fingerprint) | a bit mask over the
    # state's words (little-endian bit order, ``ceil(width / 8)`` bytes) of the words that differ
    # from an empty state's | those words (little-endian float64, in order) | the newest event's
    # categorical passthrough values (a JSON list). Words of ring slots holding a tile no
    # acceptable event can read any more are left out too, as if the slot were empty: no read
    # ever looks at them (`_Group.reach`), so the features are the same, and a typical state is a
    # third of its full width. Format 2 (the whole vector, no mask) is still read.

    @property
    def state_bytes(self) -> int:
        """Largest size of a packed state without its categorical tail (every word kept)."""
        return _PREFIX_LEN + self._mask_bytes + 8 * self.width

    @property
    def prefix(self) -> bytes:
        """The first bytes of every packed state of this view definition."""
        return self._prefix

    def empty_states(self, n: int) -> np.ndarray:
        """``n`` states of entities that have seen nothing: float64 [n, width]."""
        return np.tile(self._empty, (n, 1))

    def unreadable(self, states: np.ndarray) -> np.ndarray:
        """bool [n, width]: the words of ring slots whose tile no acceptable event can read."""
        drop = np.zeros(states.shape, dtype=bool)
        ints = states.view(np.int64)
        seen = ~np.isnan(states[:, 0])  # an empty state has no tile at all
        if not seen.any():
            return drop
        for group, tag_cols, word_cols, slot_of in self._slot_words:
            reach = np.full(len(states), EMPTY_TILE, dtype=np.int64)
            reach[seen] = group.reach(states[seen, 0], self.lateness_s)
            old = ints[:, tag_cols] < reach[:, None]
            drop[:, word_cols] = old[:, slot_of]
        return drop

    def decode(self, blobs: Sequence[bytes | None]) -> tuple[np.ndarray, Tails]:
        """States from packed blobs (None: a new entity), and their newest categorical passthrough.

        Vectorised over the batch: the blobs are joined once and every part is gathered with
        numpy; the categorical tails (JSON) are parsed only when asked for (`Tails`).
        """
        n = len(blobs)
        states = np.empty((n, self.width))
        states[:] = self._empty
        tails = Tails(n, len(self.pt_categorical))
        have = [i for i, blob in enumerate(blobs) if blob is not None]
        if not have:
            return states, tails
        kept = [cast(bytes, blobs[i]) for i in have]
        lens = np.fromiter(map(len, kept), dtype=np.int64, count=len(kept))
        # Joined with zero padding so that every blob's words start 8-byte aligned: then they
        # are gathered from one float64 view of the buffer.
        lead = -(_PREFIX_LEN + self._mask_bytes) % 8
        pads = (-lens % 8).tolist()
        pieces = [_PADS[lead]]
        for blob, pad in zip(kept, pads, strict=True):
            pieces += (blob, _PADS[pad])
        raw = b"".join(pieces)
        raw += _PADS[-len(raw) % 8]
        buf = np.frombuffer(raw, dtype=np.uint8)
        steps = lens + np.asarray(pads, dtype=np.int64)
        starts = lead + np.cumsum(steps) - steps
        short = lens < _PREFIX_LEN
        heads = buf[np.minimum(starts[:, None] + np.arange(_PREFIX_LEN), len(buf) - 1)]
        v3 = ~short & (heads == self._prefix_bytes).all(axis=1)
        v2 = ~short & ~v3 & (heads == self._prefix_v2_bytes).all(axis=1)
        body = starts + _PREFIX_LEN
        ends = np.full(len(kept), -1, dtype=np.int64)
        rows3 = np.flatnonzero(v3 & (lens >= _PREFIX_LEN + self._mask_bytes))
        if len(rows3):
            masks = buf[body[rows3][:, None] + np.arange(self._mask_bytes)]
            bits = np.unpackbits(masks, axis=1, count=self.width, bitorder="little").view(bool)
            counts = bits.sum(axis=1)
            first = body[rows3] + self._mask_bytes  # 8-aligned
            ends[rows3] = first + 8 * counts
            fits = ends[rows3] <= starts[rows3] + lens[rows3]
            if not fits.all():
                ends[rows3[~fits]] = -1
                rows3, bits, counts, first = rows3[fits], bits[fits], counts[fits], first[fits]
            before = np.cumsum(counts) - counts
            at = np.repeat(first // 8 - before, counts) + np.arange(int(counts.sum()))
            words = buf.view("<f8")[at]
            target = np.asarray(have)[rows3]
            if len(target) == n:  # every entity known, in order: fill the states in place
                states[bits] = words
            else:
                block = states[target]
                block[bits] = words
                states[target] = block
        rows2 = np.flatnonzero(v2 & (lens >= _PREFIX_LEN + 8 * self.width))
        if len(rows2):
            dense = buf[body[rows2][:, None] + np.arange(8 * self.width)].reshape(-1).view("<f8")
            states[np.asarray(have)[rows2]] = dense.reshape(len(rows2), self.width)
            ends[rows2] = body[rows2] + 8 * self.width
        bad = np.flatnonzero(ends < 0)
        if len(bad):
            blob = kept[int(bad[0])]
            raise StateMismatch(
                f"an entity state of view {self.view.name!r} was written by another definition "
                f"of the view ({bytes(blob[2:_PREFIX_LEN]).decode(errors='replace')!r}, "
                f"this one {self.fingerprint!r}): use a new view name or namespace"
            )
        if self.pt_categorical:
            tails.blobs, tails.cut = blobs, np.full(n, -1, dtype=np.int64)
            tails.cut[have] = np.where(ends - starts < lens, ends - starts, -1)
        return states, tails

    def encode_many(self, states: np.ndarray, categorical: Sequence[Sequence[str | None]]) -> list[bytes]:
        """Pack states (float64 [n, width]) with their newest events' categorical passthrough."""
        states = np.ascontiguousarray(states, dtype=np.float64)
        keep = (states.view(np.int64) != self._empty.view(np.int64)) & ~self.unreadable(states)
        masks = np.packbits(keep, axis=1, bitorder="little").tobytes()
        words = states[keep].astype("<f8", copy=False).tobytes()
        ends = (8 * np.cumsum(keep.sum(axis=1))).tolist()
        size, prefix, with_tail = self._mask_bytes, self._prefix, bool(self.pt_categorical)
        out = []
        begin = 0
        for j, (end, cats) in enumerate(zip(ends, categorical, strict=True)):
            tail = orjson.dumps(list(cats)) if with_tail else b""
            out.append(b"".join((prefix, masks[j * size : (j + 1) * size], words[begin:end], tail)))
            begin = end
        return out

    def encode(self, state: np.ndarray, categorical: Sequence[str | None]) -> bytes:
        """Pack one state with its newest event's categorical passthrough values."""
        return self.encode_many(state.reshape(1, -1), [categorical])[0]

    # -- events ----------------------------------------------------------------------------------

    def columns(self, values: Mapping[str, Column], n: int) -> Columns:
        """Convert raw feature columns (by name; missing names are all-missing) for `run`."""
        for name in self.inputs:
            col = values.get(name)
            if col is not None and len(col) != n:
                raise ValueError(f"feature {name!r} has {len(col)} values, expected {n}")
        num = {name: numeric_column(values.get(name), n) for name in self.numeric_inputs}
        cat = {
            name: category_column(values.get(name), n)
            for name in set(self.pt_categorical) | set(self.hashed_inputs)
        }
        hashes = {
            name: np.fromiter((0 if c is None else value_hash(c) for c in cat[name]), dtype=np.int64, count=n)
            for name in self.hashed_inputs
        }
        pt = (
            np.column_stack([num[name] for _, name in self.pt_numeric])
            if self.pt_numeric
            else np.zeros((n, 0))
        )
        return Columns(n, num, cat, hashes, pt)

    def run(
        self,
        states: np.ndarray,
        entity_rows: np.ndarray,
        ts: np.ndarray,
        cols: Columns,
        active: np.ndarray | None = None,
        query: np.ndarray | None = None,
        tails: Sequence[Sequence[str | None]] | None = None,
    ) -> RunOutcome:
        """Process items in order against `states` (modified in place; row ``entity_rows[i]``).

        An item is an event to apply (rejected if too late or its time is not finite), or with
        ``query[i]`` a read of the features at time ``ts[i]`` without applying anything.
        Inactive items (``active[i]`` False) are skipped. Each applied event and each query gets
        the features as of its position: ``features[i]``. ``tails[e]``: the categorical passthrough
        of state row ``e``'s newest event before this run (for queries; see `decode`).
        """
        n = len(entity_rows)
        features = np.full((n, self.n_features), NAN)
        applied = np.zeros(n, dtype=bool)
        out = RunOutcome(
            features,
            {},
            applied,
            newest=np.full(len(states), -1, dtype=np.int64),
            source=np.full(n, -1, dtype=np.int64),
        )
        idx = np.arange(n) if active is None else np.flatnonzero(active)
        is_query = np.zeros(n, dtype=bool) if query is None else np.asarray(query, dtype=bool)
        ts = np.asarray(ts, dtype=np.float64)
        if not states.flags.c_contiguous or states.dtype != np.float64:
            raise ValueError("states must be a C-contiguous float64 matrix (see empty_states / decode)")
        flat = states.reshape(-1)
        if len(idx):
            # Round r holds the r-th item of each entity (log order): entities differ within a round.
            ent = entity_rows[idx]
            order = np.argsort(ent, kind="stable")
            sorted_ent = ent[order]
            starts = np.flatnonzero(np.r_[True, sorted_ent[1:] != sorted_ent[:-1]])
            rank = np.arange(len(idx)) - np.repeat(starts, np.diff(np.r_[starts, len(idx)]))
            by_rank = np.argsort(rank, kind="stable")
            bounds = np.searchsorted(rank[by_rank], np.arange(rank.max() + 2))
            for r in range(rank.max() + 1):
                items = idx[order[by_rank[bounds[r] : bounds[r + 1]]]]
                self._round(
                    flat, entity_rows[items] * self.width, ts[items], items, is_query[items], cols, out
                )
        # Categorical passthrough: an event's own values; a query's from its entity's newest event.
        own = np.flatnonzero(applied).tolist()
        asked = np.flatnonzero(is_query & (out.source >= 0)).tolist()
        stored = np.flatnonzero(is_query & (out.source < 0)).tolist() if tails is not None else []
        for c, name in enumerate(self.pt_categorical):
            values: list[str | None] = [None] * n
            source = cols.cat[name]
            for i in own:
                values[i] = source[i]
            for i in asked:
                values[i] = source[out.source[i]]
            for i in stored:
                values[i] = tails[entity_rows[i]][c]  # type: ignore[index]
            out.categorical[name] = values
        return out

    def _round(
        self,
        f: np.ndarray,
        base: np.ndarray,
        t: np.ndarray,
        items: np.ndarray,
        is_query: np.ndarray,
        cols: Columns,
        out: RunOutcome,
    ) -> None:
        """One item per entity (``base``: its state's offset in the flattened matrix ``f``)."""
        fi = f.view(np.int64)
        newest = f[base]
        apply = ~is_query
        finite = np.isfinite(t)
        with np.errstate(invalid="ignore"):
            late = apply & finite & (t < newest - self.lateness_s)
        for i in np.flatnonzero(apply & ~finite).tolist():
            out.rejected[int(items[i])] = f"invalid event time: {t[i]}"
        for i in np.flatnonzero(late).tolist():
            ti, ni = float(t[i]), float(newest[i])
            out.rejected[int(items[i])] = (
                f"too late: event time {iso(ti)} is {ni - ti:.3f}s behind the entity's newest event "
                f"time {iso(ni)} (allowed lateness {self.lateness_s:g}s)"
            )
        ok = apply & finite & ~late
        pt = self._pt_at
        if ok.any():
            a_base, a_t, a_items = base[ok], t[ok], items[ok]
            newer = ~(a_t < newest[ok])  # ties go to the later event; NaN (no event yet) counts as older
            if newer.any():
                n_base, n_items = a_base[newer], a_items[newer]
                f[n_base] = a_t[newer]
                f[n_base[:, None] + pt] = cols.passthrough[n_items]
                out.newest[n_base // self.width] = n_items
            f[a_base + 1] += 1.0
            for g in self.groups:
                g.apply(f, fi, a_base, a_t, a_items, cols, self.lateness_s)
            out.applied[a_items] = True
            out.features[a_items[:, None], self._pt_cols] = cols.passthrough[a_items]
        read = ok | is_query
        if read.any():
            r_base, r_t, r_items = base[read], t[read], items[read]
            q = is_query[read]
            if q.any():
                out.source[r_items[q]] = out.newest[r_base[q] // self.width]
                out.features[r_items[q][:, None], self._pt_cols] = f[r_base[q][:, None] + pt]
            for g in self.groups:
                g.evaluate(f, fi, r_base, r_t, out.features, r_items)

    def latest(self, states: np.ndarray) -> np.ndarray:
        """Features of each state as of its newest event time (NaN rows for empty states): the
        newest event's passthrough values and every applied event, out-of-order ones included."""
        n = len(states)
        features = np.full((n, self.n_features), NAN)
        rows = np.flatnonzero(~np.isnan(states[:, 0]))
        if len(rows):
            f = np.ascontiguousarray(states).reshape(-1)
            base = rows * self.width
            features[rows[:, None], self._pt_cols] = f[base[:, None] + self._pt_at]
            for g in self.groups:
                g.evaluate(f, f.view(np.int64), base, f[base], features, rows)
        return features


class StateMismatch(RuntimeError):
    """A stored entity state belongs to another definition of the view."""
