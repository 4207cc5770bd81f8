"""Model metadata signatures: stable through Redis's JSON, blind to lifecycle, strict on content."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inference.metadata import Distribution, FeatureSpec, ModelVersion, TrainingInfo
from inference.signing import MetadataSigner, ModelSignatureError

KEY = b"registry-key-0123456789"


def _version() -> ModelVersion:
    return ModelVersion(
        name="fraud",
        version=4,
        sha256="ab" * 32,
        features=[
            FeatureSpec(name="amount", kind="numeric", fill_value=42.125),
            FeatureSpec(name="country", kind="categorical", categories=["DE", "FR"]),
        ],
        input_name="input",
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        stage="candidate",
        training=TrainingInfo(
            estimator="logreg",
            trained_at=datetime(2026, 1, 2, tzinfo=UTC),
            rows=10,
            holdout_rows=3,
            metrics={"auc": 0.9123456789012345},
        ),
        reference={"amount": Distribution(kind="numeric", sample=[0.1, 1e-300, 2.5e17, -3.3], count=4)},
        threshold=0.37,
    )


def test_signature_survives_the_json_round_trip_and_lifecycle_changes() -> None:
    signer = MetadataSigner(KEY)
    signed = signer.sign(_version())
    stored = ModelVersion.model_validate_json(signed.model_dump_json())  # as Redis holds it
    signer.verify(stored)
    signer.verify(stored.model_copy(update={"stage": "canary", "canary_fraction": 0.2}))


@pytest.mark.parametrize(
    "change",
    [
        {"sha256": "cd" * 32},
        {"version": 5},
        {"name": "fraud2"},
        {"threshold": 0.01},
        {"features": [FeatureSpec(name="amount", kind="numeric", fill_value=0.0)]},
        {"signature": None},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_content_change_breaks_the_signature(change: dict[str, object]) -> None:
    signer = MetadataSigner(KEY)
    signed = signer.sign(_version())
    with pytest.raises(ModelSignatureError):
        signer.verify(signed.model_copy(update=change))


def test_another_key_does_not_verify_and_short_keys_are_refused() -> None:
    signed = MetadataSigner(KEY).sign(_version())
    with pytest.raises(ModelSignatureError, match="does not verify"):
        MetadataSigner(b"another-key-0123456789").verify(signed)
    with pytest.raises(ModelSignatureError, match="not signed"):
        MetadataSigner(KEY).verify(_version())
    with pytest.raises(ValueError, match="16 bytes"):
        MetadataSigner(b"short")
