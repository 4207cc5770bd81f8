"""Windowed aggregates monitored like raw features, their warm-up excluded (real broker and Redis).

The rule (`feature_store.warmup`): an aggregate's value counts once its window is fully observed
since the online store's first event, and its reference holds the training replay's values under
the same rule.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from detectors.alerts import DriftAlert
from detectors.incidents import DriftIncident, split_outputs
from driftline.model_inputs import parse_view, version_inputs
from driftline.settings import Settings
from driftline.training_data import synthetic_training_set
from driftline.wiring import model_registry, redis_client, registered_versions
from feature_store.definitions import fraud_feature_view
from feature_store.online import OnlineStore
from feature_store.warmup import SINCE_MEMBER, tile_seconds, warmup_seconds
from inference.metadata import Distribution, FeatureSpec, ModelVersion, VersionInputs
from inference.training import TrainedModel, register_trained, train_model
from stream.drift import DriftConfig, DriftStage, all_incidents, history_key, recent_alerts
from stream.producer import EventProducer, produce_synthetic
from stream.synthetic import Batch, FraudGenerator
from stream.topics import Topics
from tests.integration.worker_support import drain, start_worker

pytestmark = pytest.mark.integration

VIEW = fraud_feature_view()
START = 1.7e9
WINDOW = 300.0  # the default drift window: ~600 events of the 2 events/s stream
_TRAINED: dict[int, tuple[TrainedModel, VersionInputs]] = {}


def _register(s: Settings, rows: int = 20_000) -> ModelVersion:
    """A model of the fraud view trained on `rows` synthetic events as `driftline models train`
    does (2 events/s: 20,000 events hold no full 24 h window, 240,000 do)."""
    if rows not in _TRAINED:
        data = synthetic_training_set(rows, seed=0, view=VIEW)
        trained = train_model(data.numeric, data.categorical, data.labels, data.ts, warmup=data.warmup)
        _TRAINED[rows] = trained, version_inputs(parse_view("fraud")[1], data.raw)
    trained, inputs = _TRAINED[rows]
    return register_trained(model_registry(s), "fraud", trained, "production", inputs=inputs)


def _produce(s: Settings, batches: Iterable[Batch]) -> None:
    topics = Topics(s.topic_prefix)
    producer = EventProducer(s.kafka_client_config())
    produce_synthetic(producer, batches, topics.events, topics.labels, 10)
    tally = producer.flush()
    assert tally.failed == 0 and tally.delivered == tally.sent


def _alerts(s: Settings) -> list[DriftAlert]:
    raw = recent_alerts(
        redis_client(s), s.topic_prefix, registered_versions(model_registry(s, publish=False))
    )
    return [DriftAlert.model_validate_json(x) for x in raw]


def _incidents(s: Settings) -> list[DriftIncident]:
    raw = all_incidents(
        redis_client(s), s.topic_prefix, registered_versions(model_registry(s, publish=False))
    )
    return [DriftIncident.model_validate_json(x) for x in raw]


def _history(s: Settings, version: int) -> list[dict[str, object]]:
    raw = redis_client(s).lrange(history_key(s.topic_prefix, "fraud", version), 0, -1)
    return [json.loads(x) for x in raw]


def _since(s: Settings) -> float:
    score = redis_client(s).zscore(OnlineStore.since_key(s.topic_prefix, VIEW.name), SINCE_MEMBER)
    assert score is not None, "the online store recorded no start"
    return float(score)


# ---- the stage and the store, directly ----------------------------------------------------------
def _meta() -> ModelVersion:
    rng = np.random.default_rng(0)
    view_record = parse_view("fraud")[1]
    return ModelVersion(
        name="fraud",
        version=1,
        sha256="0" * 64,
        features=[FeatureSpec(name=n, kind="numeric") for n in ("amount", "count_1h", "count_24h")],
        input_name="input",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        stage="production",
        reference={
            "amount": Distribution(kind="numeric", sample=rng.normal(size=2000).tolist(), count=2000),
            "count_1h": Distribution(
                kind="numeric", sample=rng.normal(size=2000).tolist(), count=2000, warmup_seconds=3600.0
            ),
            # Built from every training row (no warm rows, or before the rule): not monitored.
            "count_24h": Distribution(kind="numeric", sample=rng.normal(size=2000).tolist(), count=2000),
        },
        score_reference=Distribution(  # the score's warm-up: its longest input's (here 1 h)
            kind="numeric", sample=rng.random(2000).tolist(), count=2000, warmup_seconds=3600.0
        ),
        inputs=VersionInputs(view=view_record),
    )


def test_warming_aggregate_values_count_neither_in_windows_nor_in_cusum(
    redis_ns: tuple[redis.Redis, str],
) -> None:
    r, ns = redis_ns
    r.zadd(OnlineStore.since_key(ns, VIEW.name), {SINCE_MEMBER: START})  # as the store writes it
    cfg = DriftConfig(window_seconds=400, allowed_lateness=0, idle_timeout_seconds=None, min_window_events=0)
    stage = DriftStage(r, ns, CollectorRegistry(), cfg, worker_id="w")
    stage.set_partitions([0])
    meta = _meta()
    n = 7200
    ts = START + np.arange(n) * 1.0  # 2 h, one event a second: the first hour warms count_1h up
    rng = np.random.default_rng(1)
    columns = {name: rng.normal(size=n) for name in ("amount", "count_1h", "count_24h")}
    warming = ts < START + 3600
    scores = rng.random(n) + np.where(warming, 0.5, 0.0)
    for name in ("amount", "count_1h"):  # far off during the first hour: an alert if counted
        columns[name][warming] += 5.0
    parts, offs = np.zeros(n, dtype=np.int64), np.arange(n)
    alerts = []
    for lo in range(0, n, 1000):
        rows = np.arange(lo, min(lo + 1000, n))
        alerts += split_outputs(
            stage.observe(meta, columns, rows, scores[rows], ts[rows], parts[rows], offs[rows])
        )[0]
        stage.checkpoint()
    detectors = {(a.feature, a.detector) for a in alerts}
    assert "amount" in {f for f, _ in detectors}  # the raw feature's shift is seen
    assert not {f for f, _ in detectors} & {"count_1h", "count_24h", "__score__"}, detectors
    v = stage._current
    assert v is not None
    assert set(v.store.references) == {"amount", "count_1h", "__score__"}  # count_24h: unmarked
    assert set(v.partitions[0].cusums) == {"amount", "__score__"}  # aggregates: windowed detectors only
    for ws in range(int(START), int(START) + n - 400, 400):  # every closed window
        amount = sum(int(c) for c in r.hgetall(f"{{{ns}:drift:fraud:1}}:amount:{ws}").values())
        count = sum(int(c) for c in r.hgetall(f"{{{ns}:drift:fraud:1}}:count_1h:{ws}").values())
        score = sum(int(c) for c in r.hgetall(f"{{{ns}:drift:fraud:1}}:__score__:{ws}").values())
        assert score == count
        assert amount == 400
        assert count == (400 if ws >= START + 3600 else 0), ws  # warming: not even missing


def test_the_online_store_records_its_first_event_time(redis_ns: tuple[redis.Redis, str]) -> None:
    r, ns = redis_ns
    store = OnlineStore(r, ns, VIEW)
    key = OnlineStore.since_key(ns, VIEW.name)
    assert OnlineStore.key_layout(ns, VIEW.name)["since"] == key
    store.write_batch(["a", "b"], [START + 100, START + 50], {"amount": [1.0, 2.0]}, [0, 0], [0, 1], "t")
    assert r.zscore(key, SINCE_MEMBER) == START + 50
    # A later batch with an event older (within the allowed lateness, another entity) moves it back.
    store.write_batch(["c", "a"], [START + 20, START + 900], {"amount": [1.0, 2.0]}, [0, 0], [2, 3], "t")
    assert r.zscore(key, SINCE_MEMBER) == START + 20
    store.write_batch(["a"], [START + 950], {"amount": [1.0]}, [0], [4], "t")
    assert r.zscore(key, SINCE_MEMBER) == START + 20
    assert 0 < r.pttl(key) <= store.ttl_ms


# ---- through the worker ----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_fresh_stream_without_drift_raises_no_alert_with_aggregates_monitored(
    own_settings: Settings,
) -> None:
    """200,000 events (28 h of event time) from a fresh store: the warm-up of every aggregate
    included, the aggregates with warm references monitored through it, and no alert."""
    s = own_settings
    meta = _register(s, rows=240_000)  # 33 h: its holdout and the end of its training rows are warm
    marked = {n for n, d in meta.reference.items() if d.warmup_seconds is not None}
    assert marked == set(warmup_seconds(VIEW))  # every aggregate of the view (none is lifetime but last)
    assert meta.score_reference is not None and meta.score_reference.warmup_seconds == 86_400.0
    # Monitored with 300 s drift windows: the aggregates whose tiles fit in one (not the 24 h ones).
    tiles = tile_seconds(VIEW)
    warm = {n for n in marked if tiles[n] <= WINDOW}
    assert warm == {
        "count_10m",
        "count_1h",
        "amount_mean_1h",
        "amount_sum_1h",
        "amount_max_1h",
        "amount_last",
    }
    _produce(s, FraudGenerator(seed=11, entities=1000, start_ts=START).batches(200_000, chunk=20_000))
    drain(s, start_worker(s, batch_size=5000), timeout=300)
    since = _since(s)
    assert since == pytest.approx(START, abs=1.0)
    stats = _history(s, meta.version)
    by_feature: dict[str, list[float]] = {}
    for w in stats:
        if w["detector"] == "psi":
            by_feature.setdefault(str(w["feature"]), []).append(float(w["window_end_ts"]))  # type: ignore[arg-type]
    for name in warm:  # monitored through the stream, but only once warm
        ends = by_feature.get(name, [])
        assert len(ends) > 250, (name, len(ends))
        assert min(ends) > since + (meta.reference[name].warmup_seconds or 0.0), name
    assert len(by_feature["amount"]) > 300
    assert not {n for n in by_feature if n.endswith("_24h")}
    assert 30 < len(by_feature["__score__"]) < 60, len(by_feature["__score__"])  # the last ~4 h only
    assert min(by_feature["__score__"]) > since + 86_400
    alerts = _alerts(s)
    assert not alerts, [(a.detector, a.feature, a.message) for a in alerts[:10]]
    assert _incidents(s) == []  # no incident, warm-up included


@pytest.mark.slow
def test_a_drift_only_in_a_windowed_aggregate_opens_an_incident_naming_it(own_settings: Settings) -> None:
    """Entities transact four times as often from event 14,000 on: the raw features keep their
    distributions, the hourly count rises."""
    s = own_settings
    meta = _register(s)
    before = list(FraudGenerator(seed=12, entities=1000, start_ts=START).batches(14_000))  # 7,000 s
    change = float(before[-1].ts[-1])
    after = FraudGenerator(seed=13, entities=1000, start_ts=change, mean_gap_s=0.125)
    _produce(s, itertools.chain(before, after.batches(24_000)))  # then 3,000 s at 8 events/s
    drain(s, start_worker(s, batch_size=2000), timeout=300)
    alerts = _alerts(s)
    named = {a.feature for a in alerts}
    assert "count_1h" in named, [(a.detector, a.feature) for a in alerts]
    assert not named & set(VIEW.passthrough), [(a.detector, a.feature) for a in alerts]
    early = [a for a in alerts if a.window_end_ts <= change]
    assert not early, [(a.detector, a.feature, a.window_end_ts - START) for a in early]
    assert meta.reference["count_1h"].warmup_seconds == 3600.0
    [incident] = _incidents(s)  # one change, one incident, naming the aggregate
    assert incident.feature("count_1h") is not None and "count_1h" in incident.summary, incident.summary
    assert not {f.feature for f in incident.features} & set(VIEW.passthrough), incident.summary
