"""``driftline schema infer``: what a JSONL/CSV file of events would give a model, and a starter view.

The inputs are the file's own features (as ``train --file`` takes them) with their kinds,
missing shares and distinct counts; the starter `FeatureView` passes them through and adds a few
per-entity aggregates (event counts, means and maxima of the first numeric features, the last
value, distinct categories), to edit and pass to ``train --feature-view``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from driftline.errors import DriftlineError
from feature_store.definitions import Aggregation, FeatureView
from inference.contract import KindConflict, column_kinds
from inference.metadata import FeatureKind
from stream.file_source import FileFormatError, label_hint, read_events

MAX_AGGREGATED = 2  # numeric features that get mean/max aggregates in the starter view


@dataclass(frozen=True)
class InferredInput:
    name: str
    kind: FeatureKind
    missing_share: float
    distinct: int


@dataclass(frozen=True)
class Inferred:
    path: Path
    events: int
    entities: int
    inputs: list[InferredInput]
    empty: list[str]  # fields that never have a value
    hint: str | None  # a field that looks like the label
    label_like: list[str]  # such fields: left out of the starter view


def infer_schema(path: Path, label_field: str | None = None) -> Inferred:
    """Read the whole file; DriftlineError on a bad line or a field mixing kinds."""
    rows: list[dict[str, object]] = []
    entities: set[str] = set()
    for record in read_events(path, label_field):
        if isinstance(record, FileFormatError):
            raise DriftlineError(str(record))
        rows.append(dict(record.event.features))
        entities.add(record.event.entity_id)
    if not rows:
        raise DriftlineError(f"{path}: no events")
    names = sorted({k for row in rows for k in row})
    inputs, empty = [], []
    try:
        kinds = list(column_kinds(rows, names))
    except KindConflict as exc:
        raise DriftlineError(f"{path}: {exc}") from None
    for name, values, kind in kinds:
        if kind is None:
            empty.append(name)
            continue
        present = [v for v in values if v is not None]
        missing = 1.0 - len(present) / len(values)
        inputs.append(InferredInput(name, kind, missing, len(set(present))))
    label_like = [n for n in names if label_hint([n], label_field)]
    return Inferred(path, len(rows), len(entities), inputs, empty, label_hint(names, label_field), label_like)


def label_field_hint(path: Path) -> str | None:
    """The label hint for the file's first valid event, if a field of it looks like a label."""
    first = next((r for r in read_events(path) if not isinstance(r, FileFormatError)), None)
    return label_hint(first.event.features, None) if first is not None else None


def starter_view(inferred: Inferred) -> FeatureView:
    """The file's features passed through (not the label-like ones), plus a few aggregates per entity."""
    features = [i for i in inferred.inputs if i.name not in inferred.label_like]
    numeric = [i.name for i in features if i.kind == "numeric"]
    categorical = [i.name for i in features if i.kind == "categorical"]
    hour, day = timedelta(hours=1), timedelta(hours=24)
    aggregations = [Aggregation(function="count", windows=[hour, day])]
    for name in numeric[:MAX_AGGREGATED]:
        aggregations.append(Aggregation(function="mean", source=name, windows=[hour, day]))
        aggregations.append(Aggregation(function="max", source=name, windows=[day]))
    if numeric:
        aggregations.append(Aggregation(function="last", source=numeric[0]))
    if categorical:
        aggregations.append(Aggregation(function="distinct_count", source=categorical[0], windows=[day]))
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "_", inferred.path.stem) or "events"
    return FeatureView(
        name=stem,
        passthrough=[i.name for i in features],
        categorical=categorical,
        aggregations=aggregations,
    )


def starter_yaml(inferred: Inferred) -> str:
    """The starter view as YAML, headed by comments on the entity key and how to use it."""
    header = (
        f"# Starter feature view for {inferred.path.name}: edit, then\n"
        f"#   driftline train --file {inferred.path.name} --label-field LABEL --feature-view THIS.yaml\n"
        f"# entity key: entity_id ({inferred.entities:,} distinct in {inferred.events:,} events); "
        "aggregates are per entity, over event time (ts).\n"
    )
    return header + starter_view(inferred).to_yaml()
