"""Registering an ONNX model trained anywhere, with reference data for the drift detectors."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from driftline.errors import DriftlineError
from inference.metadata import Distribution, FeatureSpec, ModelVersion, RawInput, VersionInputs
from inference.registry import ModelRegistry
from inference.session import ModelSession
from inference.training import describe_columns
from inference.views import view_record
from stream.events import FeatureValue
from stream.file_source import FileFormatError, read_events


def parse_feature_list(spec: str) -> list[FeatureSpec]:
    """``"amount,hour,country=US|GB"`` -> two numeric features and a categorical one.

    >>> [(f.name, f.kind, f.categories) for f in parse_feature_list("a, c=x|y")]
    [('a', 'numeric', []), ('c', 'categorical', ['x', 'y'])]
    """
    features = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, cats = part.partition("=")
        if sep:
            categories = [c for c in cats.split("|") if c]
            if not categories:
                raise DriftlineError(f"--features: categorical {name!r} lists no categories")
            features.append(FeatureSpec(name=name.strip(), kind="categorical", categories=categories))
        else:
            features.append(FeatureSpec(name=name, kind="numeric"))
    if not features:
        raise DriftlineError("--features: no features given")
    return features


def register_external(
    registry: ModelRegistry,
    model_file: Path,
    name: str,
    feature_spec: str,
    reference_file: Path | None,
    stage: Literal["candidate", "production"],
) -> ModelVersion:
    onnx_bytes = model_file.read_bytes()
    features = parse_feature_list(feature_spec)
    reference: dict[str, Distribution] = {}
    score_reference: Distribution | None = None
    if reference_file is not None:
        columns: dict[str, list[FeatureValue]] = {f.name: [] for f in features}
        for record in read_events(reference_file):
            if isinstance(record, FileFormatError):
                raise DriftlineError(str(record))
            for f in features:
                columns[f.name].append(record.event.features.get(f.name))
        n = len(next(iter(columns.values())))
        if n == 0:
            raise DriftlineError(f"{reference_file}: no reference rows")
        numeric = {f.name: columns[f.name] for f in features if f.kind == "numeric"}
        categorical = {f.name: columns[f.name] for f in features if f.kind == "categorical"}
        described, reference = describe_columns(numeric, categorical, np.random.default_rng(0))
        fills = {f.name: f.fill_value for f in described}
        # Numeric fill values come from the reference data; categories stay as the model was built.
        features = [
            f.model_copy(update={"fill_value": fills[f.name]}) if f.kind == "numeric" else f for f in features
        ]
        scores = ModelSession.open(onnx_bytes, features, ref=f"{name} (unregistered)").score_events(
            columns, n
        )
        score_reference = Distribution(kind="numeric", sample=scores[:5000].tolist(), count=n)
    # Its inputs are the events' own fields, as named (no feature view), with their kinds.
    inputs = VersionInputs(view=view_record(None), raw=[RawInput(name=f.name, kind=f.kind) for f in features])
    return registry.register(
        name,
        onnx_bytes,
        features,
        reference=reference,
        score_reference=score_reference,
        stage=stage,
        inputs=inputs,
    )
