"""Model metadata: feature specs, reference distributions, versions, lifecycle events, deployments.

These pydantic models are the contract between training, the registry (stored as JSON in Redis)
and the streaming worker. Datetimes are timezone-aware UTC (naive ones are taken as UTC).

>>> amount = FeatureSpec(name="amount", kind="numeric", fill_value=42.0)
>>> country = FeatureSpec(name="country", kind="categorical", categories=["DE", "FR"])
>>> mv = ModelVersion(name="fraud", version=3, sha256="ab" * 32, features=[amount, country],
...                   input_name="input", created_at="2026-01-01T00:00:00Z", stage="candidate")
>>> mv.ref, mv.created_at.tzinfo
('fraud:3', datetime.timezone.utc)
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from inference.performance import ScoreCalibration

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_REFERENCE_SAMPLE = 5000

Stage = Literal["candidate", "shadow", "canary", "production", "archived"]
EventKind = Literal["registered", "shadow_started", "canary_started", "promoted", "rolled_back", "archived"]


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


def check_model_name(name: str) -> str:
    """Return `name` if it is a valid model name (letters, digits, '.', '_', '-'), else raise ValueError.

    >>> check_model_name("fraud-v2")
    'fraud-v2'
    """
    if not MODEL_NAME_RE.match(name):
        raise ValueError(
            f"invalid model name {name!r}: use 1-128 letters, digits, '.', '_' or '-' (starting with a "
            "letter or digit)"
        )
    return name


ModelName = Annotated[str, AfterValidator(check_model_name)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


FeatureKind = Literal["numeric", "categorical", "boolean"]


class FeatureSpec(_Model):
    """One input feature and how it is encoded.

    numeric: one float32 column, missing (None/NaN/non-number) -> `fill_value` (the training median).
    categorical: one one-hot float32 column per entry of `categories`, in order; unseen/None -> zeros.
    boolean: one float32 column, true -> 1, false -> 0, missing -> `fill_value` (the training
    majority), exactly like a 0/1 numeric column.
    """

    name: str = Field(min_length=1)
    kind: FeatureKind
    categories: list[str] = Field(default_factory=list)
    fill_value: float = 0.0

    @field_validator("fill_value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("fill_value must be finite")
        return value

    @model_validator(mode="after")
    def _categories_fit_kind(self) -> Self:
        if self.kind != "categorical" and self.categories:
            raise ValueError(f"{self.kind} feature {self.name!r} cannot have categories")
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"feature {self.name!r} has duplicate categories")
        return self

    @property
    def width(self) -> int:
        """Number of encoded columns."""
        return len(self.categories) if self.kind == "categorical" else 1


class Distribution(_Model):
    """A reference distribution: a sample of values (numeric) or category shares (categorical).

    ``warmup_seconds``: set on a windowed aggregate's reference built from warm rows only (those
    at least this long after the training replay's first event: `feature_store.warmup`), which
    is what makes the worker monitor it; None (left out of the JSON, so metadata signed before
    the field existed still verifies): every training row counted.
    """

    kind: Literal["numeric", "categorical"]
    sample: list[float] = Field(default_factory=list, max_length=MAX_REFERENCE_SAMPLE)
    frequencies: dict[str, float] = Field(default_factory=dict)
    missing_rate: float = Field(0.0, ge=0.0, le=1.0)
    count: int = Field(ge=0)
    warmup_seconds: float | None = Field(None, ge=0.0, allow_inf_nan=False, exclude_if=lambda v: v is None)


class TrainingInfo(_Model):
    """How a model was trained, and its holdout metrics (computed from the exported ONNX model).

    `calibration`: score -> P(label = 1) fitted on the holdout, for estimating live accuracy without
    labels (None for versions registered before it existed).
    """

    estimator: str
    trained_at: UtcDatetime
    rows: int = Field(ge=0)
    holdout_rows: int = Field(ge=0)
    data_start: UtcDatetime | None = None
    data_end: UtcDatetime | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    source: str = ""
    calibration: ScoreCalibration | None = None


class FeatureViewRecord(_Model):
    """Which feature view built a version's inputs: none (the event's own features), a built-in
    view, or a YAML definition, stored whole (`definition`, the `FeatureView` as JSON) with its
    fingerprint, so the worker, the API and a retrain compute exactly what training computed.

    >>> print(FeatureViewRecord(kind="none").label)
    none (the events' own features)
    """

    kind: Literal["none", "builtin", "yaml"]
    name: str = ""
    source: str = ""  # the YAML file it was read from, for people (the definition is what counts)
    definition: dict[str, Any] | None = None
    fingerprint: str = ""

    @model_validator(mode="after")
    def _definition_fits_kind(self) -> Self:
        if (self.kind == "none") != (self.definition is None):
            raise ValueError("a feature view record has a definition unless its kind is none")
        return self

    @property
    def label(self) -> str:
        if self.kind == "none":
            return "none (the events' own features)"
        where = f", from {self.source}" if self.source else ""
        return f"{self.name} ({self.kind}{where}, fingerprint {self.fingerprint})"


class RawInput(_Model):
    """One field of the raw event a version reads (directly, or through its view's aggregates),
    with the kind training saw and the share of training events that lacked it."""

    name: str = Field(min_length=1)
    kind: FeatureKind
    missing_share: float = Field(0.0, ge=0.0, le=1.0)


class InputPolicy(_Model):
    """What the worker does with an event whose input breaks the contract (always counted in
    ``driftline_input_problems_total``): ``dead_letter`` it (reason code ``feature_type`` or
    ``feature_missing``), or score it with the value treated as ``missing``."""

    wrong_type: Literal["dead_letter", "missing"] = "dead_letter"
    missing: Literal["dead_letter", "missing"] = "missing"


class VersionInputs(_Model):
    """A version's input contract: the view that builds its inputs, the raw event fields it reads
    and their kinds, and the policy for events that break it."""

    view: FeatureViewRecord
    raw: list[RawInput] = Field(default_factory=list)
    policy: InputPolicy = InputPolicy()

    def kinds(self) -> dict[str, str]:
        return {r.name: r.kind for r in self.raw}


class ModelVersion(_Model):
    """One registered version of a model: its artifact hash, features, stage and references."""

    name: ModelName
    version: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    features: list[FeatureSpec] = Field(min_length=1)
    input_name: str
    created_at: UtcDatetime
    stage: Stage
    canary_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    training: TrainingInfo | None = None
    reference: dict[str, Distribution] = Field(default_factory=dict)
    score_reference: Distribution | None = None
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    # None: registered before versions recorded their view; served with the settings' default view.
    inputs: VersionInputs | None = None
    # HMAC of the metadata under the registry key (`inference.signing`); None: unsigned.
    signature: str | None = None

    @field_validator("features")
    @classmethod
    def _unique_feature_names(cls, value: list[FeatureSpec]) -> list[FeatureSpec]:
        names = [f.name for f in value]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        return value

    @property
    def ref(self) -> str:
        """``"name:version"``."""
        return f"{self.name}:{self.version}"


class ModelEvent(_Model):
    """A lifecycle change of one model version (what the registry reports through `on_event`)."""

    kind: EventKind
    name: ModelName
    version: int = Field(ge=1)
    stage: Stage
    fraction: float | None = None
    ts: UtcDatetime
    detail: dict[str, Any] = Field(default_factory=dict)


class Deployment(_Model):
    """What serves a model now: production, an optional canary (with its traffic share), a shadow."""

    name: ModelName
    production: ModelVersion | None
    canary: ModelVersion | None
    canary_fraction: float = Field(ge=0.0, lt=1.0)
    shadow: ModelVersion | None
