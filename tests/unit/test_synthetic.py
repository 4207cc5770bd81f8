from __future__ import annotations

import itertools

import numpy as np
import pytest

from stream.events import RawEvent
from stream.synthetic import (
    CATEGORICAL_FEATURES,
    DRIFTED_FEATURES,
    NUMERIC_FEATURES,
    NUMERIC_REFERENCE,
    RULE_AFTER,
    RULE_BEFORE,
    Batch,
    DriftSchedule,
    FraudGenerator,
    rule_labels,
)


def _generate(schedule: DriftSchedule, n: int, seed: int = 1) -> Batch:
    gen = FraudGenerator(seed=seed, entities=50, schedule=schedule, start_ts=1.7e9)
    batches = list(gen.batches(n, chunk=7_000))
    return Batch(
        index=np.concatenate([b.index for b in batches]),
        event_ids=[e for b in batches for e in b.event_ids],
        entity_ids=[e for b in batches for e in b.entity_ids],
        ts=np.concatenate([b.ts for b in batches]),
        numeric={k: np.concatenate([b.numeric[k] for b in batches]) for k in NUMERIC_FEATURES},
        categorical={k: np.concatenate([b.categorical[k] for b in batches]) for k in CATEGORICAL_FEATURES},
        labels=np.concatenate([b.labels for b in batches]),
        concept_new=np.concatenate([b.concept_new for b in batches]),
    )


def test_events_follow_the_contract() -> None:
    batch = _generate(DriftSchedule(), 200)
    events = [RawEvent.model_validate(e) for e in batch.event_dicts()]
    assert len(events) == 200
    assert len({e.event_id for e in events}) == 200
    assert set(events[0].features) == set(NUMERIC_FEATURES) | set(CATEGORICAL_FEATURES)
    assert len(NUMERIC_FEATURES) == 12 and len(CATEGORICAL_FEATURES) == 2
    assert all(a.ts < b.ts for a, b in itertools.pairwise(events))
    assert {e.entity_id for e in events} <= {f"card-{i:06d}" for i in range(50)}


def test_same_seed_same_stream() -> None:
    a, b = _generate(DriftSchedule(), 500, seed=3), _generate(DriftSchedule(), 500, seed=3)
    assert np.array_equal(a.numeric["amount"], b.numeric["amount"])
    assert a.entity_ids == b.entity_ids and np.array_equal(a.labels, b.labels)


def test_reference_constants_match_the_generator() -> None:
    batch = _generate(DriftSchedule(), 60_000)
    for name, (mean, std) in NUMERIC_REFERENCE.items():
        col = batch.numeric[name]
        assert col.mean() == pytest.approx(mean, rel=0.05, abs=0.02), name
        # heavy-tailed lognormals make the sample std noisy, hence the wider tolerance
        assert col.std() == pytest.approx(std, rel=0.12), name


@pytest.mark.parametrize("shift", [0.5, 1.0, 2.0])
def test_covariate_drift_moves_means_by_the_configured_amount(shift: float) -> None:
    n, at = 60_000, 30_000
    batch = _generate(DriftSchedule(covariate_at=at, shift=shift), n)
    for name in NUMERIC_FEATURES:
        col = batch.numeric[name]
        before, after = col[:at], col[at:]
        delta = (after.mean() - before.mean()) / NUMERIC_REFERENCE[name][1]
        expected = DRIFTED_FEATURES.get(name, 0.0) * shift
        assert delta == pytest.approx(expected, abs=0.05), name
    online_before = np.mean(batch.categorical["merchant_category"][:at] == "online_retail")
    online_after = np.mean(batch.categorical["merchant_category"][at:] == "online_retail")
    assert online_before == pytest.approx(0.15, abs=0.01)
    assert online_after == pytest.approx(0.25, abs=0.01)


def test_gradual_covariate_drift_ramps_linearly() -> None:
    batch = _generate(DriftSchedule(covariate_at=10_000, width=20_000, shift=1.0), 40_000)
    std = NUMERIC_REFERENCE["amount"][1]
    base = batch.numeric["amount"][:10_000].mean()
    halfway = batch.numeric["amount"][19_000:21_000].mean()  # ramp weight ~0.5
    done = batch.numeric["amount"][30_000:].mean()
    assert (halfway - base) / std == pytest.approx(0.5, abs=0.1)
    assert (done - base) / std == pytest.approx(1.0, abs=0.06)


def test_concept_drift_flips_the_label_rule() -> None:
    n, at, noise = 40_000, 20_000, 0.02
    batch = _generate(DriftSchedule(concept_at=at), n)
    old_rule = rule_labels(batch.numeric, RULE_BEFORE)
    new_rule = rule_labels(batch.numeric, RULE_AFTER)
    labels = batch.labels
    # Before M the old rule explains the labels up to the label noise; after M the new one does.
    assert np.mean(labels[:at] == old_rule[:at]) == pytest.approx(1 - noise, abs=0.006)
    assert np.mean(labels[at:] == new_rule[at:]) == pytest.approx(1 - noise, abs=0.006)
    # ... and the old rule is clearly wrong after M: the concept really changed.
    assert np.mean(labels[at:] == old_rule[at:]) < 0.9
    assert not batch.concept_new[:at].any() and batch.concept_new[at:].all()
    # A fraud-like base rate: a minority of positives.
    assert 0.04 < labels.mean() < 0.2


def test_no_drift_schedule_changes_nothing() -> None:
    batch = _generate(DriftSchedule(), 40_000)
    col = batch.numeric["amount"]
    assert abs(col[20_000:].mean() - col[:20_000].mean()) / NUMERIC_REFERENCE["amount"][1] < 0.05


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["covariate"], "expected covariate@N"),
        (["shift@10"], "expected covariate@N"),
        (["covariate@-1"], "non-negative"),
        (["covariate@x"], "non-negative"),
        (["concept@1", "concept@2"], "twice"),
    ],
)
def test_bad_drift_specs(specs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftSchedule.parse(specs)


def test_batches_must_be_contiguous() -> None:
    gen = FraudGenerator(seed=0)
    gen.batch(0, 10)
    with pytest.raises(ValueError, match="contiguous"):
        gen.batch(5, 10)
