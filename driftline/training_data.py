"""Labeled training data as arrays, from the synthetic generator or a user's JSONL/CSV file."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from driftline.errors import DriftlineError
from feature_store.definitions import FeatureView
from feature_store.historical import EventLog, HistoricalEvent, replay, replay_chunks
from feature_store.warmup import Warmup
from inference.contract import KindConflict, column_kinds, raw_inputs
from inference.metadata import RawInput
from inference.retraining import RetrainConfig, RowWindow
from inference.views import view_sources
from stream.event_log import read_messages, read_raw_log
from stream.events import FeatureValue, LabelEvent
from stream.file_source import FileFormatError, read_events
from stream.outcomes import binary_label
from stream.synthetic import CATEGORICAL_FEATURES, NUMERIC_FEATURES, DriftSchedule, FraudGenerator
from stream.topics import Topics

SYNTHETIC_ENTITIES = 1000  # cards in the synthetic training stream (the demo streams as many)


@dataclass
class LabeledArrays:
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    labels: np.ndarray
    ts: np.ndarray  # epoch seconds
    boolean: dict[str, np.ndarray] = field(default_factory=dict)  # 1.0 / 0.0, NaN = missing
    # The raw event fields the inputs come from, with their kinds (the version's input contract).
    raw: list[RawInput] = field(default_factory=list)
    # With a feature view: when the replay's first applied event happened and each aggregate's
    # warm-up length, for references of warm rows only (`feature_store.warmup`).
    warmup: Warmup | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def columns(self) -> dict[str, np.ndarray]:
        """Every feature column by name, whatever its kind."""
        return {**self.numeric, **self.categorical, **self.boolean}


def synthetic_training_set(
    n: int, seed: int, schedule: DriftSchedule | None = None, view: FeatureView | None = None
) -> LabeledArrays:
    """Generator events with labels; with a feature view, each event's features are the ones the
    online store computes for it (the same engine, replayed in log order: no training-serving skew)."""
    gen = FraudGenerator(
        seed=seed, entities=SYNTHETIC_ENTITIES, schedule=schedule or DriftSchedule(), start_ts=1.7e9
    )
    batches = list(gen.batches(n))
    numeric = {k: np.concatenate([b.numeric[k] for b in batches]) for k in NUMERIC_FEATURES}
    categorical = {k: np.concatenate([b.categorical[k] for b in batches]) for k in CATEGORICAL_FEATURES}
    labels = np.concatenate([b.labels for b in batches]).astype(np.int64)
    ts = np.concatenate([b.ts for b in batches])
    contract = [RawInput(name=k, kind="numeric") for k in NUMERIC_FEATURES] + [
        RawInput(name=k, kind="categorical") for k in CATEGORICAL_FEATURES
    ]
    if view is None:
        return LabeledArrays(numeric, categorical, labels, ts, raw=contract)
    entity_ids = [e for b in batches for e in b.entity_ids]
    raw = {**{k: v.tolist() for k, v in numeric.items()}, **{k: v.tolist() for k, v in categorical.items()}}
    data = with_view_features(view, entity_ids, ts, raw, labels)
    data.raw = [r for r in contract if r.name in view_sources(view)]
    return data


def with_view_features(
    view: FeatureView,
    entity_ids: list[str],
    ts: np.ndarray,
    raw: dict[str, list[FeatureValue]],
    labels: np.ndarray,
    boolean: Iterable[str] = (),
) -> LabeledArrays:
    """Replay labeled events (in log order) through the feature store's engine."""
    log = [
        HistoricalEvent(entity_id=e, ts=float(t), values={k: raw[k][i] for k in raw}, offset=i)
        for i, (e, t) in enumerate(zip(entity_ids, ts.tolist(), strict=True))
    ]
    return _replayed(view, log, labels, ts, boolean)


def _replayed(
    view: FeatureView,
    log: list[HistoricalEvent],
    labels: np.ndarray,
    ts: np.ndarray,
    boolean: Iterable[str] = (),
) -> LabeledArrays:
    """The view's features of every logged event; rows kept: applied by the store and labeled
    (label >= 0). Unlabeled events still count in their entity's aggregates. Passthrough
    features named in `boolean` (the store keeps them as 1.0/0.0) are boolean inputs."""
    result = replay(view, log)
    keep = np.flatnonzero(result.applied & (labels >= 0))  # rejected events are not trained on
    booleans = set(boolean) & set(view.passthrough)
    numeric_out: dict[str, np.ndarray] = {}
    categorical_out: dict[str, np.ndarray] = {}
    boolean_out: dict[str, np.ndarray] = {}
    for j, name in enumerate(result.feature_names):
        if name in result.categorical:
            categorical_out[name] = np.array(result.categorical[name], dtype=object)[keep]
        elif name in booleans:
            boolean_out[name] = result.features[keep, j]
        else:
            numeric_out[name] = result.features[keep, j]
    warmup = Warmup.of(view, ts[result.applied])  # unlabeled events count in the aggregates too
    return LabeledArrays(
        numeric_out, categorical_out, labels[keep], ts[keep], boolean=boolean_out, warmup=warmup
    )


class LabelIndex:
    """Every label of the labels topic, compactly: a sorted array of event-id hashes (Python's
    64-bit ``hash``, stable within the process) and the labels, 9 bytes a label instead of a
    dict's ~100. The newest label of an event wins, as in the outcome joiner."""

    def __init__(self, hashes: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(hashes, kind="stable")  # stable: the newest of equal hashes comes last
        hashes, labels = hashes[order], labels[order]
        last = np.r_[hashes[1:] != hashes[:-1], True] if hashes.size else np.zeros(0, dtype=bool)
        self.hashes, self.labels = hashes[last], labels[last]

    def __len__(self) -> int:
        return int(self.hashes.size)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, int]], chunk: int = 50_000) -> LabelIndex:
        hashes: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        it = iter(pairs)
        while batch := list(islice(it, chunk)):
            hashes.append(np.fromiter((hash(e) for e, _ in batch), dtype=np.int64, count=len(batch)))
            labels.append(np.fromiter((y for _, y in batch), dtype=np.int8, count=len(batch)))
        if not hashes:
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8))
        return cls(np.concatenate(hashes), np.concatenate(labels))

    def lookup(self, event_ids: Sequence[str]) -> np.ndarray:
        """The label of each event (int64), -1 for an unlabeled one."""
        h = np.fromiter((hash(e) for e in event_ids), dtype=np.int64, count=len(event_ids))
        if self.hashes.size == 0:
            return np.full(len(event_ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.hashes, h), self.hashes.size - 1)
        return np.where(self.hashes[at] == h, self.labels[at].astype(np.int64), -1)


def _topic_labels(kafka_config: dict[str, Any], topic: str) -> Iterator[tuple[str, int]]:
    for msg in read_messages(kafka_config, topic):
        try:
            label = LabelEvent.model_validate_json(msg.value() or b"")
            yield label.event_id, binary_label(label.label)
        except (ValidationError, ValueError):
            continue  # the outcome joiner dead-letters these


def _log_chunks(
    kafka_config: dict[str, Any], topic: str, size: int
) -> Iterator[tuple[EventLog, list[str], list[dict[str, FeatureValue]]]]:
    """The events topic in log order, `size` events at a time: columns, event ids, raw features."""
    it = read_raw_log(kafka_config, topic)
    while batch := list(islice(it, size)):
        raw = [dict(event.features) for event, _, _ in batch]
        names = {name for row in raw for name in row}
        log = EventLog(
            [event.entity_id for event, _, _ in batch],
            np.array([event.ts.timestamp() for event, _, _ in batch], dtype=np.float64),
            {name: [row.get(name) for row in raw] for name in names},
            np.array([p for _, p, _ in batch], dtype=np.int64),
            np.array([o for _, _, o in batch], dtype=np.int64),
        )
        yield log, [event.event_id for event, _, _ in batch], raw


def topic_training_window(
    kafka_config: dict[str, Any],
    topics: Topics,
    view: FeatureView | None,
    config: RetrainConfig,
    chunk_size: int = 20_000,
) -> LabeledArrays:
    """The labeled events of the events topic a retrain uses (`config`: the newest
    ``recent_rows`` plus the older share), with their labels and, with a view, their
    point-in-time features: the whole log is replayed through the online store's engine in
    chunks, and only the entity states, one chunk and the window's rows stay in memory."""
    labels = LabelIndex.of(_topic_labels(kafka_config, topics.labels))
    window = RowWindow(config)
    events = 0
    chunks = _log_chunks(kafka_config, topics.events, chunk_size)
    if view is None:
        for log, event_ids, raw in chunks:
            events += len(log)
            y = labels.lookup(event_ids)
            keep = np.flatnonzero(y >= 0)
            window.add(log.ts[keep], {"~label": y[keep], "~raw": np.array(raw, dtype=object)[keep]})
    else:
        logs: dict[int, tuple[list[str], list[dict[str, FeatureValue]]]] = {}
        first = math.inf  # the replay's first applied event time: where its warm-up starts

        def remembered() -> Iterator[EventLog]:
            for log, event_ids, raw in chunks:
                logs[id(log)] = event_ids, raw
                yield log

        for chunk in replay_chunks(view, remembered()):
            events += len(chunk.log)
            applied_ts = chunk.log.ts[chunk.applied]
            if applied_ts.size:
                first = min(first, float(applied_ts.min()))
            event_ids, raw = logs.pop(id(chunk.log))
            y = labels.lookup(event_ids)
            keep = np.flatnonzero(chunk.applied & (y >= 0))  # rejected events are not trained on
            # The window's raw rows too: its input contract (raw fields and kinds) comes from them.
            columns: dict[str, np.ndarray] = {"~label": y[keep], "~raw": np.array(raw, dtype=object)[keep]}
            for j, name in enumerate(chunk.feature_names):
                if name in chunk.categorical:
                    columns[name] = np.array(chunk.categorical[name], dtype=object)[keep]
                else:
                    columns[name] = chunk.features[keep, j]
            window.add(chunk.log.ts[keep], columns)
    if not events:
        raise DriftlineError(f"{topics.events} holds no events to train on")
    ts, cols = window.rows()
    y = cols.pop("~label", np.zeros(0, dtype=np.int64))
    rows = list(cols.pop("~raw", []))
    source = str(topics.events)
    if view is None:
        return _raw_arrays(rows, y, ts, source)
    contract = _contract(rows, view_sources(view), source)
    booleans = set(_booleans(contract)) & set(view.passthrough)  # the store keeps them as 1.0/0.0
    numeric = {k: v.astype(np.float64) for k, v in cols.items() if v.dtype != object and k not in booleans}
    boolean = {k: cols[k].astype(np.float64) for k in booleans if k in cols}
    categorical = {k: v for k, v in cols.items() if v.dtype == object}
    warmup = Warmup.of(view, np.array([first]))
    return LabeledArrays(numeric, categorical, y, ts, boolean=boolean, raw=contract, warmup=warmup)


def _binary_labels(values: list[object], path: Path) -> np.ndarray:
    distinct = sorted({str(v) for v in values})
    if set(distinct) <= {"0", "1", "0.0", "1.0"}:
        return np.array([int(float(str(v))) for v in values], dtype=np.int64)
    if set(distinct) <= {"true", "false", "True", "False"}:
        return np.array([str(v).lower() == "true" for v in values], dtype=np.int64)
    raise DriftlineError(f"{path}: labels must be binary (0/1 or true/false); found {distinct[:5]}")


def file_training_set(path: Path, label_field: str, view: FeatureView | None = None) -> LabeledArrays:
    """Read labeled events; a feature's kind is its values' JSON type (numbers: numeric, strings:
    categorical, true/false: boolean; a mix is an error). With a feature view, the features are
    the view's, computed as the online store would; a view reading fields that no training event
    carries is refused, with their names."""
    rows: list[dict[str, FeatureValue]] = []
    labels: list[object] = []
    ts: list[float] = []
    entity_ids: list[str] = []
    for record in read_events(path, label_field):
        if isinstance(record, FileFormatError):
            raise DriftlineError(str(record))
        assert record.label is not None
        rows.append(dict(record.event.features))
        labels.append(record.label.label)
        ts.append(record.event.ts.timestamp())
        entity_ids.append(record.event.entity_id)
    if len(rows) < 50:
        raise DriftlineError(f"{path}: {len(rows)} labeled events; at least 50 are needed to train")
    if view is not None:
        contract = _contract(rows, view_sources(view), str(path))
        carried = {r.name for r in contract}
        lacking = [name for name in view_sources(view) if name not in carried]
        if lacking:
            present = sorted({k for row in rows for k in row})
            raise DriftlineError(
                f"feature view {view.name!r} reads {', '.join(lacking)}, which no training event in "
                f"{path} carries (their features: {', '.join(present[:20]) or 'none'})"
            )
        raw = {name: [row.get(name) for row in rows] for name in sorted({k for row in rows for k in row})}
        data = with_view_features(
            view, entity_ids, np.array(ts), raw, _binary_labels(labels, path), _booleans(contract)
        )
        data.raw = contract
        return data
    return _raw_arrays(rows, _binary_labels(labels, path), np.array(ts), str(path))


def _contract(rows: Sequence[Mapping[str, object]], names: Iterable[str], source: str) -> list[RawInput]:
    try:
        return raw_inputs(rows, names)
    except KindConflict as exc:
        raise DriftlineError(f"{source}: {exc}") from None


def _booleans(contract: Iterable[RawInput]) -> list[str]:
    return [r.name for r in contract if r.kind == "boolean"]


def _raw_arrays(
    rows: list[dict[str, FeatureValue]], labels: np.ndarray, ts: np.ndarray, source: str
) -> LabeledArrays:
    """Columns of raw events by their values' kind: numbers numeric, strings categorical,
    true/false boolean (1.0/0.0); a field with no value at all is left out."""
    names = sorted({name for row in rows for name in row})
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    boolean: dict[str, np.ndarray] = {}
    try:
        kinds = list(column_kinds(rows, names))
    except KindConflict as exc:
        raise DriftlineError(f"{source}: {exc}") from None
    for name, values, kind in kinds:
        if kind == "categorical":
            categorical[name] = np.array(["" if v is None else v for v in values], dtype=object)
        elif kind is not None:
            column = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            (boolean if kind == "boolean" else numeric)[name] = column
    return LabeledArrays(
        numeric, categorical, labels, ts, boolean=boolean, raw=_contract(rows, names, source)
    )
