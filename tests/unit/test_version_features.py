"""Each deployed version gets its inputs from its own feature view; the input gate applies
the contract of the version each event is routed to (no Kafka or Redis: fake sources and messages)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from prometheus_client import CollectorRegistry

from feature_store.definitions import Aggregation, FeatureView
from feature_store.online import OnlineStore
from inference.metadata import (
    Deployment,
    FeatureSpec,
    InputPolicy,
    ModelVersion,
    RawInput,
    Stage,
    VersionInputs,
)
from inference.routing import route
from inference.views import view_record
from stream.decode import EventBatch, decode_batch
from stream.input_gate import InputGate
from stream.scoring import Scorer
from stream.version_features import VersionFeatures
from stream.worker import FeatureColumns
from tests.unit.test_decode import _msgs

VIEW = FeatureView(
    name="agg", passthrough=["x"], aggregations=[Aggregation(function="count", windows=["1h"])]
)
RAW = [RawInput(name="x", kind="numeric"), RawInput(name="vip", kind="boolean")]


def _version(
    v: int,
    stage: Stage,
    view: FeatureView | None,
    policy: InputPolicy | None = None,
    raw: Sequence[RawInput] = RAW,
) -> ModelVersion:
    names = ["x", "vip"] if view is None else view.feature_names()
    return ModelVersion(
        name="m",
        version=v,
        sha256=f"{v:064x}",
        features=[FeatureSpec(name=n, kind="boolean" if n == "vip" else "numeric") for n in names],
        input_name="input",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        stage=stage,
        inputs=VersionInputs(view=view_record(view), raw=list(raw), policy=policy or InputPolicy()),
    )


class FakeViewSource:
    """Stands in for the view's online store: count_1h = 7 for every event."""

    def columns(self, batch: EventBatch, names: Sequence[str]) -> FeatureColumns:
        return FeatureColumns(
            {n: [7.0] * len(batch) if n == "count_1h" else batch.columns([n])[n] for n in names}
        )


def _batch(features: list[dict[str, object]]) -> EventBatch:
    values: list[bytes | None] = [
        orjson.dumps({"event_id": str(i), "entity_id": f"e{i}", "ts": "2026-01-01T00:00:00Z", "features": f})
        for i, f in enumerate(features)
    ]
    batch, dead = decode_batch(_msgs(values), worker="w")
    assert not dead
    return batch


def _scorer(production: ModelVersion, canary: ModelVersion | None = None) -> Scorer:
    d = Deployment(
        name="m", production=production, canary=canary, canary_fraction=0.5 if canary else 0.0, shadow=None
    )
    return Scorer(d, {})


def _no_store(view: FeatureView) -> OnlineStore:
    raise AssertionError(f"the fake source of {view.name} is used, not a store")


def test_a_canary_with_another_view_gets_that_views_columns() -> None:
    source = VersionFeatures(lambda meta: VIEW if meta.version == 2 else None, _no_store, "t.events")
    source._sources[VIEW.fingerprint()] = FakeViewSource()
    scorer = _scorer(_version(1, "production", None), _version(2, "canary", VIEW))
    result = source.columns_for(_batch([{"x": 1.5, "vip": True}, {"x": 2.5, "vip": False}]), scorer)
    assert dict(result.columns) == {"x": [1.5, 2.5], "vip": [True, False]}  # production: raw
    assert dict(result.per_version["m:2"]) == {"x": [1.5, 2.5], "count_1h": [7.0, 7.0]}  # the canary's view
    assert scorer.encoding_keys["m:1"] != scorer.encoding_keys["m:2"]


def _gate() -> tuple[InputGate, CollectorRegistry]:
    registry = CollectorRegistry()
    return InputGate(registry, "w"), registry


def test_the_gate_dead_letters_wrong_types_and_counts_every_problem() -> None:
    gate, registry = _gate()
    batch = _batch([{"x": 1, "vip": True}, {"x": "1", "vip": True}, {"vip": 1, "other": 2}])
    gated = gate.check(batch, _scorer(_version(1, "production", None)))
    kept, dead = gated.batch, gated.dead
    assert [e.event_id for e in kept.events] == ["0"]
    assert [(d.reason_code, d.source_offset) for d in dead] == [("feature_type", 1), ("feature_type", 2)]
    assert dead[1].reason == "features.vip: m:1 expects true or false (boolean), got a number"
    # Dead-lettered, not scored, but handed to the drift stage with the offending input missing.
    assert gated.unscored.offsets.tolist() == [1, 2] and list(gated.unscored.missing) == [{"x"}, {"vip", "x"}]
    count = registry.get_sample_value
    assert (
        count("driftline_input_problems_total", {"model": "m", "feature": "x", "problem": "wrong_type"}) == 1
    )
    assert count("driftline_input_problems_total", {"model": "m", "feature": "x", "problem": "missing"}) == 1
    assert (
        count(
            "driftline_input_problems_total", {"model": "m", "feature": "other", "problem": "unknown_feature"}
        )
        == 1
    )


def test_the_missing_policy_nulls_wrong_types_and_can_dead_letter_absent_inputs() -> None:
    gate, _ = _gate()
    policy = InputPolicy(wrong_type="missing", missing="dead_letter")
    batch = _batch([{"x": "1", "vip": True}, {"vip": False}])
    gated = gate.check(batch, _scorer(_version(1, "production", None, policy)))
    kept, dead = gated.batch, gated.dead
    assert [e.features for e in kept.events] == [{"x": None, "vip": True}]
    assert [d.reason_code for d in dead] == ["feature_missing"] and "features.x" in dead[0].reason
    assert list(gated.unscored.missing) == [{"x"}]


def test_each_event_is_checked_against_the_contract_of_the_version_it_is_routed_to() -> None:
    gate, registry = _gate()
    canary_raw = [RawInput(name="x", kind="categorical"), RawInput(name="vip", kind="boolean")]
    scorer = _scorer(_version(1, "production", None), _version(2, "canary", None, raw=canary_raw))
    events: list[dict[str, object]] = [{"x": 1.5 if i % 2 else "a", "vip": True} for i in range(40)]
    batch = _batch(events)
    arm_of = route(scorer.deployment, batch.entity_ids).tolist()
    assert 0 < sum(arm_of) < len(arm_of)  # both arms get events
    gated = gate.check(batch, scorer)
    # Production expects a number for x, the canary a category string: each event's own version
    # refuses it, so exactly the events whose x suits their arm's contract are kept.
    fits = [isinstance(e["x"], float) == (arm == 0) for e, arm in zip(events, arm_of, strict=True)]
    assert [e.event_id for e in gated.batch.events] == [str(i) for i, ok in enumerate(fits) if ok]
    by_version = {d.reason.split()[1] for d in gated.dead}
    assert by_version == {"m:1", "m:2"}
    assert all(
        d.reason.endswith("got a string" if d.reason.split()[1] == "m:1" else "got a number")
        for d in gated.dead
    )
    # Only production's refusals go to its drift detectors (the canary's are not monitored).
    refused_by_production = [
        i for i, (ok, arm) in enumerate(zip(fits, arm_of, strict=True)) if not ok and arm == 0
    ]
    assert gated.unscored.offsets.tolist() == refused_by_production
    wrong = registry.get_sample_value(
        "driftline_input_problems_total", {"model": "m", "feature": "x", "problem": "wrong_type"}
    )
    assert wrong == len(events) - sum(fits)
