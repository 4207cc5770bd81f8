"""The whole loop on the clusters users run: a Redis Cluster (3 masters + 3 replicas) and three
replicated Kafka brokers, started privately on free ports by the `driftline stack up
--redis-cluster --kafka-brokers 3` code.

A worker, the outcome joiner and the retrainer (its own process) see a concept flip: one
incident, one retrain job, a canary, a promotion - the same story as `test_retrain_loop` on one
broker and one Redis. `driftline features get`, the API's ``/features/{id}`` and
``redis-cli -c`` read the same online features of an entity from the cluster. And one worker on
the single broker and Redis agrees with three on the clusters on every prediction, online
feature, drift statistic and the incident.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest
from confluent_kafka.admin import AdminClient
from fastapi.testclient import TestClient
from pydantic import SecretStr
from redis.cluster import RedisCluster

from detectors.incidents import DriftIncident, IncidentEvent
from driftline.settings import Settings
from driftline.wiring import build_api, model_registry
from feature_store.definitions import fraud_feature_view
from feature_store.online import OnlineStore
from stream.drift import incidents_key
from stream.synthetic import DriftSchedule
from stream.topics import Topics, create_topics
from tests.helpers import consume_all, run_cli
from tests.integration import test_worker_drift as drift_tests
from tests.integration.chaos_support import EVENTS, BackgroundStream, assert_counts_exact, assert_scored
from tests.integration.loop_support import model_steps, running_loop
from tests.integration.test_chaos_outages import Supervisor
from tests.integration.test_retrain_loop import LOOP_SETTINGS, _produce, _production
from tests.integration.worker_support import register, wait_until
from tests.private_stack import PrivateCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("cpu-heavy")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    with PrivateCluster(tmp_path_factory.mktemp("cluster-loop"), kafka_brokers=3, redis_cluster=True) as pc:
        yield pc


@pytest.fixture
def settings(cluster: PrivateCluster) -> Settings:
    """This test's own prefix on the private clusters (they are this module's: nothing to clean)."""
    s = cluster.settings.model_copy(
        update={
            **LOOP_SETTINGS,
            "redis_url": cluster.redis_cluster_url,
            "topic_prefix": f"cl-{uuid.uuid4().hex[:8]}",
        }
    )
    create_topics(AdminClient(s.kafka_client_config()), Topics(s.topic_prefix), partitions=6)
    return s


def test_the_loop_retrains_and_promotes_on_a_redis_cluster_and_three_brokers(
    settings: Settings, tmp_path: Path
) -> None:
    s = settings
    assert len(s.kafka_bootstrap.split(",")) == 3 and isinstance(s.redis_client(), RedisCluster)
    register(s)  # production fraud:1, trained before the flip
    registry = model_registry(s, publish=False)
    with running_loop(s, tmp_path / "retrainer.log"):
        _produce(s, 12_000, seed=21, schedule=DriftSchedule(concept_at=4_000), start_ts=1.7e9)
        wait_until(lambda: registry.deployment("fraud").canary is not None, timeout=300, every=1.0)
        _produce(s, 6_000, seed=22, schedule=DriftSchedule(concept_at=0), start_ts=1.7e9 + 10_000)
        wait_until(lambda: _production(registry) == 2, timeout=300, every=1.0)
        outcomes = [r.json() for r in consume_all(s, Topics(s.topic_prefix).outcomes, 18_000, 180)]

    steps = model_steps(s)
    kinds = Counter(e["kind"] for e in steps)
    assert kinds["retrain_started"] == 1 and kinds["retrain_finished"] == 1, kinds
    decided = [e["detail"]["action"] for e in steps if e["kind"] == "rollout_decided"]
    assert decided == ["promote"], decided
    incidents = [r.json() for r in consume_all(s, Topics(s.topic_prefix).alerts, 1, 10)]
    opened = [e for e in incidents if e["kind"] == "opened" and e["version"] == 1]
    assert len(opened) == 1, [(e["kind"], e["version"], e["summary"]) for e in incidents]
    served = [o for o in outcomes if o["served"]]
    assert len(served) == len({o["event_id"] for o in served}) == 18_000  # each event judged once

    # `driftline report` reads the same story back from the cluster: every version's drift
    # windows (their keys on the versions' slots), the incident, the retrain that answered it.
    page = tmp_path / "report.html"
    done = run_cli("report", "--out", str(page), env={**os.environ, **s.as_env()})
    assert done.returncode == 0, done.stderr
    assert "2 versions of fraud" in done.stdout, done.stdout
    text = page.read_text()
    assert opened[0]["incident_id"][:12] in text and "<h2>Incidents</h2>" in text
    assert "finished: " in text, "the report shows no retrain for the incident"


def test_cli_api_and_redis_cli_read_the_same_features_from_the_cluster(
    settings: Settings, cluster: PrivateCluster
) -> None:
    s = settings
    register(s)
    rc = s.redis_client()
    assert isinstance(rc, RedisCluster)
    store = OnlineStore(rc, s.topic_prefix, fraud_feature_view())
    t0 = 1.7e9
    entity = "card-cluster-7"
    store.write_batch(
        [entity] * 3,
        [t0, t0 + 60, t0 + 120],
        {"amount": [10.0, 20.0, 30.0], "merchant_category": ["grocery", "travel", "grocery"]},
        partitions=[4, 4, 4],
        offsets=[0, 1, 2],
        source=Topics(s.topic_prefix).events,
    )
    described = store.describe(entity)
    assert described is not None and described.values["count_24h"] == 3.0

    shown = run_cli("features", "get", entity, "--json", env={**os.environ, **s.as_env()})
    assert shown.returncode == 0, shown.stderr
    cli_values = orjson.loads(shown.stdout)["values"]

    token = uuid.uuid4().hex
    client = TestClient(build_api(s.model_copy(update={"api_token": SecretStr(token)})))
    api = client.get(f"/features/{entity}", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200, api.text
    api_values = api.json()["values"]

    port = cluster.stack.redis_cluster_nodes()[0].port

    def redis_cli(*args: str) -> str:
        done = subprocess.run(["redis-cli", "-c", "-p", str(port), *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    partition = int(redis_cli("GET", store.where_key(entity)))
    assert partition == 4
    raw = orjson.loads(redis_cli("HGET", store.entity_key(entity, partition), "features"))
    assert cli_values == api_values == described.values
    assert {k: raw[k] for k in described.values} == described.values


def test_one_worker_on_one_redis_and_three_on_the_clusters_agree_on_everything(
    settings: Settings, own_settings: Settings
) -> None:
    """The same 14,000 events (a covariate drift at 8,000) through 1 worker on the shared stack's
    single broker and Redis, and through 3 workers on the 3 brokers and the Redis Cluster: the
    same prediction for every event, the same online features for every entity, the same drift
    state (merged windows, every windowed statistic, every partition's ADWIN and CUSUM), one
    incident with the same evidence."""
    one, three = drift_tests._settings(own_settings), drift_tests._settings(settings)
    for s in (one, three):
        register(s)
        drift_tests._produce(s, 14_000, drift_at=8_000)  # same seed: same events, same partitions
    drift_tests._run_workers(one, 1)
    drift_tests._run_workers(three, 3)

    def predictions(s: Settings) -> list[dict[str, Any]]:
        return [r.json() for r in consume_all(s, Topics(s.topic_prefix).predictions, 14_000, 60)]

    def by_event(preds: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
        # An event id is "<the producing run's id>-<its number>": the same events, other runs.
        fields = ("version", "score", "predicted", "source_partition", "source_offset")
        return {p["event_id"].split("-", 1)[1]: tuple(p[k] for k in fields) for p in preds}

    def features(s: Settings, entities: set[str]) -> dict[str, dict[str, Any]]:
        store = OnlineStore(s.redis_client(), s.topic_prefix, fraud_feature_view())
        out = {}
        for e in sorted(entities):
            d = store.describe(e)
            assert d is not None, e
            out[e] = {"values": d.values, "events": d.events, "as_of": d.as_of}
        return out

    preds_one, preds_three = predictions(one), predictions(three)
    assert len(by_event(preds_one)) == 14_000 and by_event(preds_one) == by_event(preds_three)
    entities = {p["entity_id"] for p in preds_one}
    assert len(entities) > 500 and features(one, entities) == features(three, entities)

    state_one, state_three = drift_tests._drift_state(one), drift_tests._drift_state(three)
    assert state_one.keys() == state_three.keys() and len(state_one) > 50
    for name in state_one:
        differences = drift_tests._leaf_diff(state_one[name], state_three[name])
        assert not differences, f"{name} differs between 1 and 3 workers: {differences[:5]}"

    def incident(s: Settings) -> tuple[Any, ...]:
        """The one incident's evidence as it stands. Its id is not compared: it names the
        signal that opened it, and which signal a worker decides first depends on the number
        of workers (each holds other partitions); the evidence gathered does not."""
        events = [
            IncidentEvent.model_validate_json(x.value)
            for x in consume_all(s, Topics(s.topic_prefix).alerts, 1, 10)
        ]
        opened = [e for e in events if e.kind == "opened"]
        assert len(opened) == 1, [(e.kind, e.summary) for e in events]
        raw = s.redis_client().hget(incidents_key(s.topic_prefix, "fraud", 1), opened[0].incident_id)
        latest = DriftIncident.model_validate_json(raw or b"{}")
        features = {f.feature: (sorted(f.detectors), f.severity, f.signals) for f in latest.features}
        return latest.state, latest.severity, latest.signals, features

    assert incident(one) == incident(three)


def test_a_killed_broker_of_three_repeats_and_loses_no_prediction_exactly_once(
    tmp_path: Path, stack_settings: Settings, new_prefix: Callable[[str], str]
) -> None:
    """``kill -9`` of one of three brokers - the leader of an events partition - while the
    exactly-once worker (a supervised process, as in production) streams: a read_committed
    reader sees every valid event's prediction exactly once, and every ``count_24h`` is exact."""
    with PrivateCluster(tmp_path / "kafka", kafka_brokers=3, redis_cluster=False) as pc:
        s = pc.settings.model_copy(
            update={"redis_url": stack_settings.redis_url, "topic_prefix": new_prefix("bk")}
        )
        admin = AdminClient(s.kafka_client_config())
        create_topics(admin, Topics(s.topic_prefix), partitions=6)
        register(s)
        worker = Supervisor(cast(Any, SimpleNamespace(settings=s)), tmp_path / "worker.log")
        try:
            stream = BackgroundStream(s)
            wait_until(lambda: (worker.metric("driftline_events_consumed_total") or 0) > 5000, timeout=180)
            events = admin.list_topics(Topics(s.topic_prefix).events, timeout=10)
            leader = events.topics[Topics(s.topic_prefix).events].partitions[0].leader
            pc.kill(f"kafka-{leader}")
            stream.join()
            served = assert_scored(s, EVENTS, exactly_once=True)
            assert_counts_exact(s, served)
            assert worker.alive(), worker.exits  # exits only by its watchdog (status 75), if at all
            print(f"broker {leader} killed; worker exits: {worker.exits}")
        finally:
            worker.stop()
