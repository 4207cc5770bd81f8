"""A user's own events, from a data set an installed package ships (scikit-learn's bundled
breast-cancer data: no download), with a boolean and a categorical column, as JSONL and CSV."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn.datasets import load_breast_cancer

NUMERIC = ["mean_radius", "mean_texture", "mean_smoothness", "worst_area"]
BOOLEAN = "irregular"
CATEGORICAL = "size_band"
OWN_FEATURES = [*NUMERIC, BOOLEAN, CATEGORICAL]
START = 1.7e9  # aligned to the drift windows


def own_events(
    n: int,
    seed: int,
    shift_at: int | None = None,
    shift_feature: str = "mean_texture",
    shift_sd: float = 3.0,
    gap_s: float = 0.5,
    start: float = START,
) -> list[dict[str, Any]]:
    """`n` flat events sampled (with replacement) from the data set's rows, `gap_s` apart in event
    time, 150 patients; from event `shift_at` on, `shift_feature` moves up by `shift_sd` std devs."""
    data = load_breast_cancer()
    col = {name: data.data[:, j] for j, name in enumerate(data.feature_names)}
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(data.target), size=n)
    area_cuts = np.quantile(col["mean area"], [1 / 3, 2 / 3])
    shift = shift_sd * float(col[shift_feature.replace("_", " ")].std())
    events = []
    for i, r in enumerate(rows.tolist()):
        row = {**{k: v[r] for k, v in col.items()}, "target": data.target[r]}
        area = float(row["mean area"])
        event: dict[str, Any] = {
            "entity_id": f"patient-{i % 150:04d}",
            "ts": datetime.fromtimestamp(start + i * gap_s, UTC).isoformat().replace("+00:00", "Z"),
            **{name: round(float(row[name.replace("_", " ")]), 5) for name in NUMERIC},
            BOOLEAN: bool(row["mean concave points"] > 0.05),
            CATEGORICAL: "small" if area < area_cuts[0] else "medium" if area < area_cuts[1] else "large",
            "label": int(row["target"]),
        }
        if shift_at is not None and i >= shift_at:
            event[shift_feature] = round(event[shift_feature] + shift, 5)
        events.append(event)
    return events


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def write_csv(path: Path, events: list[dict[str, Any]]) -> Path:
    """CSV as pandas would write it: booleans as true/false."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(events[0]))
        writer.writeheader()
        for e in events:
            writer.writerow(
                {k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in e.items()}
            )
    return path
