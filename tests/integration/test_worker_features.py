"""The worker with the Redis online feature store: zero skew, idempotent replays, `features get`."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import orjson
import pytest

from driftline.settings import Settings
from driftline.training_data import synthetic_training_set
from driftline.wiring import model_registry, online_store
from feature_store.definitions import fraud_feature_view
from feature_store.historical import HistoricalEvent, replay
from inference.training import register_trained, train_model
from stream.event_log import read_event_log
from stream.producer import EventProducer
from stream.synthetic import FraudGenerator
from stream.topics import Topics
from tests.helpers import run_cli
from tests.integration.worker_support import drain, predictions, served_counts, start_worker

pytestmark = pytest.mark.integration

VIEW = fraud_feature_view()


def _register_view_model(s: Settings) -> list[str]:
    data = synthetic_training_set(3000, seed=0, view=VIEW)
    trained = train_model(data.numeric, data.categorical, data.labels, data.ts)
    meta = register_trained(model_registry(s), "fraud", trained, "production")
    return [f.name for f in meta.features]


def _produce_out_of_order(s: Settings, n: int, seed: int, shuffle_share: float = 0.05) -> None:
    """Synthetic events where a share arrive up to 5 minutes late (inside the allowed lateness)."""
    rng = random.Random(seed)
    batch = FraudGenerator(seed=seed, entities=300, start_ts=1.7e9, mean_gap_s=0.2).batch(0, n)
    producer = EventProducer(s.kafka_client_config())
    for event, ts in zip(batch.event_dicts(), batch.ts.tolist(), strict=True):
        if rng.random() < shuffle_share:
            late = ts - rng.uniform(1, 300)
            event["ts"] = datetime.fromtimestamp(late, UTC).isoformat()
        producer.send(Topics(s.topic_prefix).events, event["entity_id"], event)
    assert producer.flush().delivered == n


def _event_log(s: Settings) -> list[HistoricalEvent]:
    return list(read_event_log(s.kafka_client_config(), Topics(s.topic_prefix).events))


@pytest.mark.slow
def test_zero_skew_between_serving_and_training_features(own_settings: Settings) -> None:
    s = own_settings
    names = _register_view_model(s)
    assert "count_1h" in names and "amount_mean_24h" in names  # the model uses online aggregates
    n = 100_000
    _produce_out_of_order(s, n, seed=3)
    running = start_worker(s, exit_when_idle=5.0, attach_features=True, batch_size=1000)
    drain(s, running, timeout=600)

    preds = [p for p in predictions(s, n) if p["served"]]
    assert len(served_counts(preds)) == n
    sample = random.Random(0).sample(preds, 1000)
    history = replay(VIEW, _event_log(s))
    expected = history.features_for([(p["source_partition"], p["source_offset"]) for p in sample])
    index = {name: j for j, name in enumerate(history.feature_names)}
    mismatches = 0
    for p, row in zip(sample, expected, strict=True):
        for name, served in p["features"].items():
            if name in history.categorical:
                continue  # strings, compared below
            want = float(row[index[name]])
            got = math.nan if served is None else float(served)
            if not (math.isnan(want) and math.isnan(got)) and abs(want - got) > 1e-9:
                mismatches += 1
    assert mismatches == 0
    rows = history.index([(p["source_partition"], p["source_offset"]) for p in sample])
    for name in history.categorical:
        assert [p["features"][name] for p in sample] == [history.categorical[name][i] for i in rows.tolist()]
    # Out-of-order events really were in the stream, and windowed counts grew past 1.
    assert max(p["features"]["count_24h"] for p in sample) > 5


def test_replayed_events_do_not_double_count(own_settings: Settings) -> None:
    s = own_settings
    _register_view_model(s)
    _produce_out_of_order(s, 3000, seed=4)
    first = start_worker(s, exit_when_idle=3.0, attach_features=True)
    drain(s, first)
    store = online_store(s, VIEW)
    entities = sorted({p["entity_id"] for p in predictions(s, 3000)})
    before = {e: store.describe(e) for e in entities}

    # The same events again, as after a crash before the offsets were committed.
    again = start_worker(s, group_id=f"{s.topic_prefix}-replay", exit_when_idle=3.0, attach_features=True)
    drain(s, again)
    after = {e: store.describe(e) for e in entities}
    for e in entities:
        b, a = before[e], after[e]
        assert b is not None and a is not None
        assert (a.values, a.events, a.as_of) == (b.values, b.events, b.as_of), e

    preds = predictions(s, 6000)
    by_event: dict[str, list[dict[str, object]]] = {}
    for p in preds:
        by_event.setdefault(str(p["event_id"]), []).append(p)
    assert len(by_event) == 3000
    # Both passes served identical features for every event.
    assert all(len(v) == 2 and v[0]["features"] == v[1]["features"] for v in by_event.values())


def test_features_get(own_settings: Settings, cli_env: dict[str, str]) -> None:
    s = own_settings
    env = {**cli_env, "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix}
    _register_view_model(s)
    _produce_out_of_order(s, 500, seed=5, shuffle_share=0)
    running = start_worker(s, exit_when_idle=3.0)
    drain(s, running)
    entity = predictions(s, 500)[0]["entity_id"]
    shown = run_cli("features", "get", entity, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    data = orjson.loads(shown.stdout)
    assert data["entity_id"] == entity and data["values"]["count_24h"] >= 1 and data["as_of"]
    unknown = run_cli("features", "get", "card-nobody", env=env)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "driftline: error: no features for entity 'card-nobody' in view 'fraud'"
