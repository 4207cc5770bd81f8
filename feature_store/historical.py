"""Historical features: replay an event log in memory with the online store's own engine.

Two questions, two functions:

* **What did the online path compute for each event?** `replay` applies the log exactly as
  `OnlineStore.write_batch` does (same `Engine`, same rules: log order per entity, lateness
  rejections, duplicates of an already seen (partition, offset) skipped) and returns every
  event's features; `ReplayResult.features_for` picks events by (partition, offset). They are
  bit-identical to what the online store returned for those events, however the log was cut
  into batches online: training on them has no training-serving skew. (The one exception is an
  entity whose Redis state expired, TTL, while its events still came: the replay does not expire.)
* **What were an entity's features at time T?** `get_historical_features` answers a point-in-time
  query per ``(entity_id, T)`` row: the features computed from the entity's events with event
  time ``<= T`` that the online path applied (the same lateness rejections and duplicates, decided
  in log order), applied in event-time order, and read at time ``T`` (windows end with the tile
  holding ``T``; passthrough features are those of the newest event at or before ``T``). Nothing
  after ``T`` leaks in. An entity without such events gets count 0 (sums 0) and NaN elsewhere.
  At ``T`` = an event's own time this equals that event's online features up to floating-point
  rounding of sums when events arrived out of order (event-time vs log order of additions).

>>> from feature_store.definitions import Aggregation, FeatureView
>>> count = Aggregation(function="count", windows=["1h"])
>>> view = FeatureView(name="v", passthrough=["x"], aggregations=[count])
>>> times = [0, 60, 7200]
>>> log = [HistoricalEvent(entity_id="a", ts=t, values={"x": t}, offset=i) for i, t in enumerate(times)]
>>> replay(view, log).features_for([(0, 1)]).tolist()
[[60.0, 2.0]]
>>> get_historical_features(view, log, [("a", 100.0), ("a", 7199.0), ("b", 100.0)]).features.tolist()
[[60.0, 2.0], [60.0, 0.0], [nan, 0.0]]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from feature_store.definitions import FeatureView
from feature_store.engine import Cell, Column, Engine, RunOutcome

__all__ = [
    "EventLog",
    "HistoricalEvent",
    "HistoricalFeatures",
    "ReplayResult",
    "ReplayedChunk",
    "get_historical_features",
    "replay",
    "replay_chunks",
]


class HistoricalEvent(BaseModel):
    """One logged event: who, when (epoch seconds, or a datetime; naive = UTC), its raw feature
    values, and its place in the log."""

    model_config = ConfigDict(frozen=True)

    entity_id: str
    ts: float
    values: dict[str, Cell] = {}
    partition: int = 0
    offset: int

    @field_validator("ts", mode="before")
    @classmethod
    def _epoch(cls, ts: object) -> object:
        return _epoch(ts) if isinstance(ts, datetime) else ts


def _epoch(ts: datetime) -> float:
    return (ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts).timestamp()


@dataclass
class EventLog:
    """The same as a list of `HistoricalEvent`, column by column (what `write_batch` takes)."""

    entity_ids: Sequence[str]
    ts: np.ndarray
    values: Mapping[str, Column]
    partitions: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.entity_ids)

    @classmethod
    def of(cls, events: Sequence[HistoricalEvent], names: Iterable[str]) -> EventLog:
        return cls(
            [e.entity_id for e in events],
            np.array([e.ts for e in events], dtype=np.float64),
            {name: [e.values.get(name) for e in events] for name in names},
            np.array([e.partition for e in events], dtype=np.int64),
            np.array([e.offset for e in events], dtype=np.int64),
        )

    def chunk(self, start: int, stop: int) -> EventLog:
        return EventLog(
            self.entity_ids[start:stop],
            self.ts[start:stop],
            {name: col[start:stop] for name, col in self.values.items()},
            self.partitions[start:stop],
            self.offsets[start:stop],
        )


@dataclass
class ReplayResult:
    """Every event's features as the online path computed them (index = position in the log)."""

    feature_names: list[str]
    partitions: np.ndarray
    offsets: np.ndarray
    features: np.ndarray  # float64 [events, features]; NaN rows for rejected and duplicate events
    categorical: dict[str, list[str | None]]
    applied: np.ndarray  # bool
    duplicate: np.ndarray  # bool: (partition, offset) seen before, skipped (online: replayed)
    rejected: dict[int, str] = field(default_factory=dict)

    def index(self, events: Sequence[tuple[int, int]]) -> np.ndarray:
        """Log positions of the first occurrence of each (partition, offset); KeyError if absent."""
        first: dict[tuple[int, int], int] = {}
        for i, key in enumerate(zip(self.partitions.tolist(), self.offsets.tolist(), strict=True)):
            first.setdefault(key, i)
        missing = [e for e in events if (e[0], e[1]) not in first]
        if missing:
            raise KeyError(f"not in the log: {missing[:5]}")
        return np.array([first[e[0], e[1]] for e in events], dtype=np.int64)

    def features_for(self, events: Sequence[tuple[int, int]]) -> np.ndarray:
        """Features of the events at these (partition, offset), in that order."""
        return self.features[self.index(events)]


@dataclass
class HistoricalFeatures:
    """Point-in-time features, one row per ``entity_df`` row."""

    feature_names: list[str]
    features: np.ndarray  # float64 [rows, features]
    categorical: dict[str, list[str | None]]


class _Memory:
    """Entity states kept in memory: one growing float64 matrix, rows assigned on first sight."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.row_of: dict[str, int] = {}
        self.states = engine.empty_states(1024)
        self.tails: list[list[str | None]] = []

    def rows(self, entity_ids: Sequence[str]) -> np.ndarray:
        for entity in entity_ids:
            if entity not in self.row_of:
                self.row_of[entity] = len(self.row_of)
                self.tails.append([None] * len(self.engine.pt_categorical))
        if len(self.row_of) > len(self.states):
            grown = self.engine.empty_states(max(len(self.row_of), 2 * len(self.states)))
            grown[: len(self.states)] = self.states
            self.states = grown
        return np.fromiter((self.row_of[e] for e in entity_ids), dtype=np.int64, count=len(entity_ids))

    def run(
        self,
        entity_ids: Sequence[str],
        ts: np.ndarray,
        values: Mapping[str, Column],
        active: np.ndarray | None = None,
        query: np.ndarray | None = None,
    ) -> RunOutcome:
        rows = self.rows(entity_ids)
        cols = self.engine.columns(values, len(entity_ids))
        out = self.engine.run(self.states, rows, ts, cols, active=active, query=query, tails=self.tails)
        for e in np.flatnonzero(out.newest >= 0).tolist():
            item = int(out.newest[e])
            self.tails[e] = [out.categorical[name][item] for name in self.engine.pt_categorical]
        return out


def _chunks(
    events: Iterable[HistoricalEvent] | EventLog, names: Iterable[str], size: int
) -> Iterator[EventLog]:
    if isinstance(events, EventLog):
        for start in range(0, len(events), size):
            yield events.chunk(start, start + size)
        return
    names = list(names)
    it = iter(events)
    while chunk := list(islice(it, size)):
        yield EventLog.of(chunk, names)


@dataclass
class ReplayedChunk:
    """One chunk of the log and what the online path computed for each of its events."""

    log: EventLog
    feature_names: list[str]
    features: np.ndarray  # float64 [events, features]; NaN rows for rejected and duplicate events
    categorical: dict[str, list[str | None]]
    applied: np.ndarray
    duplicate: np.ndarray
    rejected: dict[int, str]  # by position in this chunk


def replay_chunks(view: FeatureView, chunks: Iterable[EventLog]) -> Iterator[ReplayedChunk]:
    """`replay`, one chunk at a time: memory holds the entity states and the current chunk only,
    so a caller that keeps a bounded share of the rows replays a log of any length."""
    engine = Engine(view)
    memory = _Memory(engine)
    marks: dict[int, int] = {}
    for log in chunks:
        seen = _seen(log.partitions, log.offsets, marks)
        out = memory.run(log.entity_ids, log.ts, log.values, active=~seen)
        yield ReplayedChunk(log, engine.names, out.features, out.categorical, out.applied, seen, out.rejected)


def replay(
    view: FeatureView, events: Iterable[HistoricalEvent] | EventLog, chunk_size: int = 50_000
) -> ReplayResult:
    """Every event's features, computed as the online store computes them (see the module doc).

    ``events``: the log, in log order within each partition (partitions may be interleaved).
    """
    engine = Engine(view)
    parts, offs, features, applied, duplicate = [], [], [], [], []
    categorical: dict[str, list[str | None]] = {name: [] for name in engine.pt_categorical}
    rejected: dict[int, str] = {}
    done = 0
    for chunk in replay_chunks(view, _chunks(events, engine.inputs, chunk_size)):
        parts.append(chunk.log.partitions)
        offs.append(chunk.log.offsets)
        features.append(chunk.features)
        applied.append(chunk.applied)
        duplicate.append(chunk.duplicate)
        for name, values in chunk.categorical.items():
            categorical[name] += values
        rejected.update({done + i: reason for i, reason in chunk.rejected.items()})
        done += len(chunk.log)
    width = len(engine.names)
    return ReplayResult(
        engine.names,
        np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64),
        np.concatenate(offs) if offs else np.zeros(0, dtype=np.int64),
        np.vstack(features) if features else np.zeros((0, width)),
        categorical,
        np.concatenate(applied) if applied else np.zeros(0, dtype=bool),
        np.concatenate(duplicate) if duplicate else np.zeros(0, dtype=bool),
        rejected,
    )


def _seen(partitions: np.ndarray, offsets: np.ndarray, marks: dict[int, int]) -> np.ndarray:
    """Events at or below their partition's highest offset so far (updating ``marks``)."""
    seen = np.zeros(len(offsets), dtype=bool)
    for p in np.unique(partitions).tolist():
        idx = np.flatnonzero(partitions == p)
        o = offsets[idx]
        before = np.maximum.accumulate(np.r_[marks.get(p, -1), o])[:-1]
        seen[idx] = o <= before
        marks[p] = int(max(marks.get(p, -1), o.max()))
    return seen


def get_historical_features(
    view: FeatureView,
    events: Iterable[HistoricalEvent] | EventLog,
    entity_df: Sequence[tuple[str, float | datetime]],
) -> HistoricalFeatures:
    """Point-in-time features for each ``(entity_id, T)`` of ``entity_df`` (see the module doc)."""
    engine = Engine(view)
    wanted = {entity for entity, _ in entity_df}
    # Which events the online path applied: decided in log order by a full replay.
    memory = _Memory(engine)
    marks: dict[int, int] = {}
    kept: list[EventLog] = []
    for log in _chunks(events, engine.inputs, 50_000):
        seen = _seen(log.partitions, log.offsets, marks)
        out = memory.run(log.entity_ids, log.ts, log.values, active=~seen)
        pick = np.flatnonzero(
            out.applied & np.fromiter((e in wanted for e in log.entity_ids), bool, len(log))
        )
        kept.append(_take(log, pick))
    applied = _concat(kept, engine.inputs)

    # Then those events in event-time order, each query after the events at its time.
    n_events, n_queries = len(applied), len(entity_df)
    q_ts = np.array(
        [_epoch(t) if isinstance(t, datetime) else float(t) for _, t in entity_df], dtype=np.float64
    )
    if not np.isfinite(q_ts).all():
        raise ValueError("entity_df timestamps must be finite")
    ts = np.concatenate([applied.ts, q_ts])
    kind = np.r_[np.zeros(n_events, dtype=np.int64), np.ones(n_queries, dtype=np.int64)]
    order = np.lexsort((np.arange(len(ts)), kind, ts))
    entity_ids = [*applied.entity_ids, *(entity for entity, _ in entity_df)]
    values = {name: _pad(col, n_queries) for name, col in applied.values.items()}
    out = _Memory(engine).run(
        [entity_ids[i] for i in order.tolist()],
        ts[order],
        {name: [col[i] for i in order.tolist()] for name, col in values.items()},
        query=kind[order] == 1,
    )
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    rows = position[n_events:]
    return HistoricalFeatures(
        engine.names,
        out.features[rows],
        {name: [col[i] for i in rows.tolist()] for name, col in out.categorical.items()},
    )


def _take(log: EventLog, idx: np.ndarray) -> EventLog:
    picked = idx.tolist()
    return EventLog(
        [log.entity_ids[i] for i in picked],
        log.ts[idx],
        {name: [col[i] for i in picked] for name, col in log.values.items()},
        log.partitions[idx],
        log.offsets[idx],
    )


def _concat(logs: list[EventLog], names: Iterable[str]) -> EventLog:
    return EventLog(
        [e for log in logs for e in log.entity_ids],
        np.concatenate([log.ts for log in logs]) if logs else np.zeros(0),
        {name: [v for log in logs for v in log.values.get(name, [None] * len(log))] for name in names},
        np.concatenate([log.partitions for log in logs]) if logs else np.zeros(0, dtype=np.int64),
        np.concatenate([log.offsets for log in logs]) if logs else np.zeros(0, dtype=np.int64),
    )


def _pad(col: Column, n: int) -> list[Cell]:
    return [*list(col), *([None] * n)]
