"""The warm-up rule of windowed aggregates (`feature_store.warmup`) and the warm references."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftline.model_inputs import parse_view
from driftline.training_data import synthetic_training_set
from feature_store.definitions import Aggregation, FeatureView, fraud_feature_view
from feature_store.historical import EventLog, replay
from feature_store.warmup import SINCE_MEMBER, LiveWarmup, Warmup, warm_masks, warmup_seconds
from inference.metadata import Distribution, FeatureSpec, ModelVersion, VersionInputs
from inference.signing import MetadataSigner
from inference.training import MIN_WARM_ROWS, train_model, warm_references
from stream.drift import DriftConfig, DriftStage
from stream.synthetic import FraudGenerator


def test_warmup_lengths_are_the_windows_lifetime_last_needs_none_other_lifetimes_never_count() -> None:
    view = FeatureView(
        name="v",
        passthrough=["x"],
        aggregations=[
            Aggregation(function="count", windows=["10m", "1h"]),
            Aggregation(function="last", source="x"),
            Aggregation(function="sum", source="x"),
        ],
    )
    assert warmup_seconds(view) == {"count_10m": 600.0, "count_1h": 3600.0, "x_last": 0.0, "x_sum": math.inf}
    fraud = warmup_seconds(fraud_feature_view())
    assert "amount" not in fraud and fraud["country_distinct_count_24h"] == 86_400.0


def test_a_value_counts_from_one_window_after_the_first_event_and_never_while_unknown() -> None:
    ts = np.array([100.0, 699.0, 700.0, 5000.0])
    masks = warm_masks(ts, 100.0, {"a": 600.0, "b": 600.0, "never": math.inf, "last": 0.0})
    assert masks["a"].tolist() == [False, False, True, True]
    assert masks["b"] is masks["a"]  # one comparison per distinct length
    assert not masks["never"].any() and masks["last"].all()
    unknown = warm_masks(ts, None, {"a": 600.0})
    assert not unknown["a"].any()


def _log(n: int, seed: int, entities: int = 50) -> EventLog:
    batch = FraudGenerator(seed=seed, entities=entities, start_ts=1.7e9, mean_gap_s=2.0).batch(0, n)
    values: dict[str, Any] = {k: v.tolist() for k, v in {**batch.numeric, **batch.categorical}.items()}
    return EventLog(batch.entity_ids, batch.ts, values, np.zeros(n, dtype=np.int64), np.arange(n))


def _suffix(log: EventLog, start: int) -> EventLog:
    return EventLog(
        log.entity_ids[start:],
        log.ts[start:],
        {k: v[start:] for k, v in log.values.items()},
        log.partitions[start:],
        log.offsets[start:],
    )


def test_a_warm_value_is_the_steady_state_one_and_a_warming_one_is_not() -> None:
    """What the rule promises: a store that started late computes, for every value the rule
    counts, exactly what a store that saw the whole history computes; before, it does not."""
    view = fraud_feature_view()
    log = _log(12_000, seed=3)  # 2 s between events: 6.7 h of event time, 50 entities
    start = 6_000  # the late store's first event
    full, late = replay(view, log), replay(view, _suffix(log, start))
    since = float(log.ts[start])
    need = warmup_seconds(view)
    for name, seconds in need.items():
        if not math.isfinite(seconds) or seconds > 3 * 3600:
            continue  # 24 h windows are never warm in this log
        j = full.feature_names.index(name)
        steady, truncated = full.features[start:, j], late.features[:, j]
        warm = warm_masks(log.ts[start:], since, {name: seconds})[name]
        assert warm.sum() > 1000, name
        assert np.array_equal(steady[warm], truncated[warm], equal_nan=True), name
        if seconds > 0:  # while the window is not fully observed, the late store's value differs
            assert not np.array_equal(steady[~warm], truncated[~warm], equal_nan=True), name


def test_the_training_replay_records_where_its_warm_up_starts() -> None:
    data = synthetic_training_set(3000, seed=0, view=fraud_feature_view())
    assert data.warmup is not None
    assert data.warmup.since == pytest.approx(float(data.ts.min()))
    assert data.warmup.seconds == warmup_seconds(fraud_feature_view())
    assert synthetic_training_set(500, seed=0).warmup is None  # no view, no aggregates
    assert Warmup.of(FeatureView(name="raw", passthrough=["x"]), np.array([1.0])) is None


def test_warm_references_use_warm_rows_only_and_are_marked() -> None:
    secs = 1000.0 + np.arange(10_000, dtype=np.float64)  # one row a second
    count = np.where(secs < 1000.0 + 3600, 1.0, 5.0)  # low while the window fills up
    warmup = Warmup(1000.0, {"count_1h": 3600.0, "count_24h": 86_400.0, "x_sum": math.inf})
    columns = {"count_1h": count, "count_24h": count, "x_sum": count, "x": count}
    refs = warm_references(warmup, columns, secs)
    assert set(refs) == {"count_1h"}  # 24 h: no warm row; lifetime sum: never; x: a raw feature
    ref = refs["count_1h"]
    assert ref.warmup_seconds == 3600.0 and ref.count == 10_000 - 3600 and set(ref.sample) == {5.0}
    few = warm_references(Warmup(1000.0, {"count_1h": 10_000.0 - MIN_WARM_ROWS + 1}), columns, secs)
    assert few == {}


def test_train_model_builds_warm_references_and_leaves_the_rest_as_it_was() -> None:
    data = synthetic_training_set(16_000, seed=0, view=fraud_feature_view())
    plain = train_model(data.numeric, data.categorical, data.labels, data.ts)
    warm = train_model(data.numeric, data.categorical, data.labels, data.ts, warmup=data.warmup)
    assert warm.features == plain.features and warm.training.metrics == plain.training.metrics
    assert warm.score_reference == plain.score_reference  # the model trains on every row as before
    marked = {n for n, d in warm.reference.items() if d.warmup_seconds is not None}
    assert marked == {
        "count_10m",
        "count_1h",
        "amount_mean_1h",
        "amount_sum_1h",
        "amount_max_1h",
        "amount_last",
    }
    for name, d in warm.reference.items():
        if name not in marked:
            assert d == plain.reference[name]  # raw features, and 24 h windows never warm in 8,000 s
    # The warm-up shows in the reference: the 1 h count of warm rows is higher than of all rows.
    assert np.mean(warm.reference["count_1h"].sample) > np.mean(plain.reference["count_1h"].sample) + 0.5
    assert warm.reference["count_1h"].count < plain.reference["count_1h"].count


def _version(reference: dict[str, Distribution]) -> ModelVersion:
    return ModelVersion(
        name="fraud",
        version=1,
        sha256="ab" * 32,
        features=[FeatureSpec(name="count_1h", kind="numeric")],
        input_name="input",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        stage="production",
        reference=reference,
    )


def test_references_without_a_warm_up_keep_their_json_so_old_signatures_verify() -> None:
    plain = Distribution(kind="numeric", sample=[1.0, 2.0], count=2)
    assert "warmup_seconds" not in plain.model_dump_json()
    signer = MetadataSigner(b"0123456789abcdef")
    # Signed as metadata was before the field existed: its JSON has no such key.
    old = signer.sign(_version({"count_1h": plain}))
    stored = old.model_dump_json()
    assert "warmup_seconds" not in stored
    signer.verify(ModelVersion.model_validate_json(stored))
    warm = signer.sign(_version({"count_1h": plain.model_copy(update={"warmup_seconds": 3600.0})}))
    back = ModelVersion.model_validate_json(warm.model_dump_json())
    assert back.reference["count_1h"].warmup_seconds == 3600.0
    signer.verify(back)
    with pytest.raises(ValueError):
        Distribution(kind="numeric", count=0, warmup_seconds=math.inf)


class _Client:
    def __init__(self) -> None:
        self.score: float | None = None
        self.reads = 0

    def zscore(self, key: str, member: bytes) -> float | None:
        assert key == "ns:fs:fraud:since" and member == SINCE_MEMBER
        self.reads += 1
        return self.score


def test_the_live_rule_reads_the_store_start_until_known_then_only_every_refresh() -> None:
    client, now = _Client(), [0.0]
    live = LiveWarmup(client, "ns:fs:fraud:since", {"count_10m": 600.0}, 60.0, clock=lambda: now[0])  # type: ignore[arg-type]
    ts = np.array([1000.0, 1700.0])
    assert not live.masks(ts)["count_10m"].any()  # the store wrote nothing yet: nothing counts
    client.score = 1000.0
    assert live.masks(ts)["count_10m"].tolist() == [False, True]  # not known yet: read again
    client.score = 300.0
    now[0] = 59.0
    assert live.masks(ts)["count_10m"].tolist() == [False, True] and client.reads == 2
    now[0] = 60.0
    assert live.masks(ts)["count_10m"].tolist() == [True, True] and client.reads == 3


def _view_version(reference: dict[str, Distribution], score: Distribution | None = None) -> ModelVersion:
    return _version(reference).model_copy(
        update={"inputs": VersionInputs(view=parse_view("fraud")[1]), "score_reference": score}
    )


def test_the_stage_monitors_warm_aggregates_whose_tiles_fit_in_a_drift_window() -> None:
    def ref(warmup: float | None) -> Distribution:
        return Distribution(kind="numeric", sample=[1.0, 2.0], count=2, warmup_seconds=warmup)

    meta = _view_version(
        {"amount": ref(None), "count_1h": ref(3600.0), "count_24h": ref(86_400.0), "count_10m": ref(None)},
        score=ref(86_400.0),
    )
    client: Any = None  # choosing what to monitor reads nothing

    def stage(window: float) -> DriftStage:
        return DriftStage(
            client, "ns", CollectorRegistry(), DriftConfig(window_seconds=window), monitored={"x"}
        )

    raw = set(fraud_feature_view().passthrough)
    # count_10m's reference is from every training row (no warm-up): never monitored.
    assert stage(300)._monitored_of(meta) == raw | {"count_1h"}  # 24 h: 2 h tiles
    assert stage(7200)._monitored_of(meta) == raw | {"count_1h", "count_24h"}
    assert stage(300)._monitored_of(_version({"count_1h": ref(3600.0)})) == {"x"}  # no view recorded
    live = stage(300)._warmup_of(meta)
    assert live is not None and live.seconds == {"count_1h": 3600.0, "__score__": 86_400.0}
    assert live.key == "ns:fs:fraud:since"
    assert stage(300)._warmup_of(_view_version({"amount": ref(None)})) is None
