"""Labeled training data as arrays, from the synthetic generator or a user's JSONL/CSV file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driftline.errors import DriftlineError
from stream.file_source import FileFormatError, read_events
from stream.synthetic import CATEGORICAL_FEATURES, NUMERIC_FEATURES, DriftSchedule, FraudGenerator


@dataclass
class LabeledArrays:
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    labels: np.ndarray
    ts: np.ndarray  # epoch seconds

    def __len__(self) -> int:
        return len(self.labels)


def synthetic_training_set(n: int, seed: int, schedule: DriftSchedule | None = None) -> LabeledArrays:
    gen = FraudGenerator(seed=seed, entities=1000, schedule=schedule or DriftSchedule(), start_ts=1.7e9)
    batches = list(gen.batches(n))
    return LabeledArrays(
        numeric={k: np.concatenate([b.numeric[k] for b in batches]) for k in NUMERIC_FEATURES},
        categorical={k: np.concatenate([b.categorical[k] for b in batches]) for k in CATEGORICAL_FEATURES},
        labels=np.concatenate([b.labels for b in batches]).astype(np.int64),
        ts=np.concatenate([b.ts for b in batches]),
    )


def _binary_labels(values: list[object], path: Path) -> np.ndarray:
    distinct = sorted({str(v) for v in values})
    if set(distinct) <= {"0", "1", "0.0", "1.0"}:
        return np.array([int(float(str(v))) for v in values], dtype=np.int64)
    if set(distinct) <= {"true", "false", "True", "False"}:
        return np.array([str(v).lower() == "true" for v in values], dtype=np.int64)
    raise DriftlineError(f"{path}: labels must be binary (0/1 or true/false); found {distinct[:5]}")


def file_training_set(path: Path, label_field: str) -> LabeledArrays:
    """Read labeled events; a feature is numeric when all its values are numbers, else categorical."""
    rows: list[dict[str, object]] = []
    labels: list[object] = []
    ts: list[float] = []
    for record in read_events(path, label_field):
        if isinstance(record, FileFormatError):
            raise DriftlineError(str(record))
        assert record.label is not None
        rows.append(dict(record.event.features))
        labels.append(record.label.label)
        ts.append(record.event.ts.timestamp())
    if len(rows) < 50:
        raise DriftlineError(f"{path}: {len(rows)} labeled events; at least 50 are needed to train")
    names = sorted({name for row in rows for name in row})
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        present = [v for v in values if v is not None]
        if all(isinstance(v, int | float) for v in present):
            numeric[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        elif all(isinstance(v, str) for v in present):
            categorical[name] = np.array(["" if v is None else v for v in values], dtype=object)
        else:
            raise DriftlineError(f"{path}: feature {name!r} mixes numbers and strings")
    return LabeledArrays(numeric, categorical, _binary_labels(labels, path), np.array(ts))
