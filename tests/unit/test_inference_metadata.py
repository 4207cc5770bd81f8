"""Model metadata validation and model references."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from inference.metadata import Deployment, Distribution, FeatureSpec, ModelEvent, ModelVersion, TrainingInfo
from inference.registry import parse_ref

FEATURES = [
    FeatureSpec(name="amount", kind="numeric", fill_value=12.0),
    FeatureSpec(name="country", kind="categorical", categories=["DE", "FR"]),
]


def version(**overrides: Any) -> ModelVersion:
    fields: dict[str, Any] = {
        "name": "fraud",
        "version": 3,
        "sha256": "a" * 64,
        "features": FEATURES,
        "input_name": "input",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "stage": "candidate",
    }
    return ModelVersion(**{**fields, **overrides})


def test_ref_and_json_round_trip() -> None:
    mv = version(
        training=TrainingInfo(
            estimator="logreg",
            trained_at=datetime(2026, 1, 1, tzinfo=UTC),
            rows=80,
            holdout_rows=20,
            data_start=None,
            data_end=None,
            metrics={"auc": 0.9},
            source="unit",
        ),
        reference={"amount": Distribution(kind="numeric", sample=[1.0, 2.0], count=2)},
        score_reference=Distribution(kind="numeric", sample=[0.1], count=1),
    )
    assert mv.ref == "fraud:3"
    assert ModelVersion.model_validate_json(mv.model_dump_json()) == mv


def test_datetimes_are_utc() -> None:
    assert version(created_at=datetime(2026, 1, 1, 12)).created_at == datetime(2026, 1, 1, 12, tzinfo=UTC)
    paris = timezone(timedelta(hours=1))
    created = version(created_at=datetime(2026, 1, 1, 13, tzinfo=paris)).created_at
    assert created.tzinfo == UTC and created.hour == 12


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "fraud:2"}, "invalid model name"),
        ({"name": ""}, "invalid model name"),
        ({"version": 0}, "greater than or equal to 1"),
        ({"sha256": "ABC"}, "pattern"),
        ({"features": []}, "at least 1"),
        ({"features": [FEATURES[0], FEATURES[0]]}, "unique"),
        ({"stage": "live"}, "stage"),
        ({"canary_fraction": 1.0}, "less than 1"),
        ({"threshold": 1.5}, "less than or equal to 1"),
    ],
)
def test_invalid_versions_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        version(**overrides)


def test_feature_spec_rules() -> None:
    with pytest.raises(ValidationError, match="cannot have categories"):
        FeatureSpec(name="x", kind="numeric", categories=["a"])
    with pytest.raises(ValidationError, match="duplicate categories"):
        FeatureSpec(name="x", kind="categorical", categories=["a", "a"])
    with pytest.raises(ValidationError, match="finite"):
        FeatureSpec(name="x", kind="numeric", fill_value=float("nan"))
    assert FeatureSpec(name="x", kind="categorical", categories=["a", "b"]).width == 2


def test_distribution_sample_is_capped() -> None:
    with pytest.raises(ValidationError, match="at most 5000"):
        Distribution(kind="numeric", sample=[0.0] * 5001, count=5001)


def test_event_and_deployment() -> None:
    ev = ModelEvent(kind="promoted", name="fraud", version=2, stage="production", ts=datetime(2026, 1, 1))
    assert ev.ts.tzinfo == UTC and ev.detail == {}
    with pytest.raises(ValidationError):
        ModelEvent(kind="deployed", name="fraud", version=2, stage="production", ts=datetime(2026, 1, 1))
    d = Deployment(name="fraud", production=version(), canary=None, canary_fraction=0.0, shadow=None)
    assert d.production is not None and d.production.ref == "fraud:3"
    with pytest.raises(ValidationError):
        Deployment(name="fraud", production=None, canary=None, canary_fraction=1.0, shadow=None)


def test_parse_ref() -> None:
    assert parse_ref("fraud:3") == ("fraud", 3)
    assert parse_ref("fraud") == ("fraud", None)
    assert parse_ref(" fraud-v2.x:12 ") == ("fraud-v2.x", 12)


@pytest.mark.parametrize("bad", ["", ":3", "fraud:", "fraud:x", "fraud:0", "fraud:-1", "a:b:c", "fr aud"])
def test_parse_ref_refuses_bad_refs_in_one_line(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid model reference") as info:
        parse_ref(bad)
    assert "\n" not in str(info.value) and repr(bad) in str(info.value)
