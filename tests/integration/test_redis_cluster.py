"""Driftline's Redis users on a real Redis Cluster (3 masters + 3 replicas, started privately on
free ports by the `driftline stack up --redis-cluster` code): the online feature store, the drift
window store with the shared alert policy and incident book, the model registry. The same tests
as on a single Redis run here through a ``RedisCluster`` client made from a ``redis+cluster://``
URL; the key layout (`driftline.redis_keys`) keeps every transaction and script on one slot."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from confluent_kafka.admin import AdminClient
from redis.cluster import RedisCluster

from driftline.redis_keys import delete_namespace, key_slot
from driftline.settings import Settings
from feature_store import keys
from feature_store.definitions import fraud_feature_view
from feature_store.historical import EventLog, replay
from feature_store.online import OnlineStore
from inference.registry import ModelRegistry
from stream.drift import incidents_key, policy_key
from stream.replication import ReplicaBarrier
from stream.topics import Topics, create_topics
from tests.integration import test_detectors_window_store as window_tests
from tests.integration import test_drift_incidents as incident_tests
from tests.integration import test_feature_store as fs_tests
from tests.integration.chaos_support import BackgroundStream, assert_counts_exact, assert_scored
from tests.integration.worker_support import register, start_worker, wait_until
from tests.private_stack import PrivateCluster
from tests.unit.test_feature_store_streams import mixed_view, random_stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    with PrivateCluster(tmp_path_factory.mktemp("rcluster"), kafka_brokers=0, redis_cluster=True) as pc:
        yield pc


@pytest.fixture(scope="module")
def settings(cluster: PrivateCluster) -> Settings:
    return cluster.settings.model_copy(update={"redis_url": cluster.redis_cluster_url})


@pytest.fixture(scope="module")
def rc(settings: Settings) -> Iterator[RedisCluster]:
    client = settings.redis_client()
    assert isinstance(client, RedisCluster)  # a redis+cluster:// URL gives a cluster client
    yield client
    client.close()


@pytest.fixture
def ns() -> str:
    return f"rc-{uuid.uuid4().hex[:8]}"  # the cluster is this module's own: nothing to clean


def _masters(rc: RedisCluster) -> set[str]:
    return {n.name for n in rc.get_primaries()}


def test_the_feature_store_spreads_its_partitions_over_the_masters(rc: RedisCluster, ns: str) -> None:
    view = mixed_view()
    store = OnlineStore(rc, ns, view)
    s = random_stream(41, 3000, entities=60, partitions=6)
    results = [store.write_batch(**s.batch(a, a + 500), source="events") for a in range(0, 3000, 500)]
    expected = replay(view, EventLog(s.entity_ids, s.ts, s.values, s.partitions, s.offsets))
    np.testing.assert_array_equal(np.vstack([r.features for r in results]), expected.features)
    # One slot per partition, the six slots held by all three masters.
    holders = {rc.get_node_from_key(store.offset_key("events", p)).name for p in range(6)}
    assert holders == _masters(rc) and len({key_slot(store.offset_key("events", p)) for p in range(6)}) == 6
    # Reads find each entity's partition, then its features.
    entities = sorted(set(s.entity_ids))
    last = {e: i for i, e in enumerate(s.entity_ids)}
    latest = store.get_online_features([*entities, "nobody"])
    np.testing.assert_array_equal(latest[:-1], expected.features[[last[e] for e in entities]])
    assert np.isnan(latest[-1]).all()
    described = store.describe(entities[0])
    applied = int(expected.applied[[e == entities[0] for e in s.entity_ids]].sum())
    assert described is not None and described.events == applied
    # A batch read again (a crash before the commit of its offsets) applies nothing.
    again = store.write_batch(**s.batch(2500, 3000), source="events")
    assert again.replayed.all()
    np.testing.assert_array_equal(again.features, results[-1].features)
    # An entity whose events come from two partitions cannot be fenced on a cluster: refused.
    with pytest.raises(ValueError, match="several partitions"):
        store.write_batch(["x", "x"], [1.7e9, 1.7e9 + 1], {}, [0, 1], [10_000, 10_000], source="events")


def test_redis_cli_reads_an_entity_where_the_key_layout_says(
    rc: RedisCluster, ns: str, cluster: PrivateCluster
) -> None:
    store = OnlineStore(rc, ns, mixed_view())
    s = random_stream(42, 200, entities=4, partitions=4)
    store.write_batch(**s.batch(0, 200), source="events")
    entity = s.entity_ids[-1]
    port = cluster.stack.redis_cluster_nodes()[0].port

    def cli(*args: str) -> str:
        done = subprocess.run(["redis-cli", "-c", "-p", str(port), *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    partition = cli("GET", store.where_key(entity))
    assert int(partition) == int(s.partitions[s.entity_ids.index(entity)])
    features = cli("HGET", store.entity_key(entity, int(partition)), "features")
    described = store.describe(entity)
    assert described is not None and '"count_1h":' in features
    assert str(described.values["count_1h"]) in features


@pytest.mark.parametrize(
    "test",
    [
        fs_tests.test_write_then_read_the_latest_features,
        fs_tests.test_writing_a_batch_again_applies_nothing_and_returns_the_same_features,
        fs_tests.test_a_partly_replayed_batch_applies_only_the_new_events,
        fs_tests.test_a_concurrent_writer_of_the_partition_is_fenced,
        fs_tests.test_online_features_equal_historical_replay_for_20000_events,
    ],
    ids=lambda t: t.__name__.removeprefix("test_"),
)
def test_the_feature_store_suite_on_a_cluster(test: object, rc: RedisCluster, ns: str) -> None:
    test(rc, ns)  # type: ignore[operator]


@pytest.mark.parametrize(
    "test",
    [
        window_tests.test_one_or_three_workers_give_identical_windows,
        window_tests.test_replayed_and_overlapping_batches_do_not_double_count,
        window_tests.test_restart_mid_window_closes_once_with_the_full_count,
        window_tests.test_decided_alerts_are_published_again_as_decided_never_re_decided,
        window_tests.test_adwin_alerts_wait_in_the_outbox_until_published,
    ],
    ids=lambda t: t.__name__.removeprefix("test_"),
)
def test_the_window_store_suite_on_a_cluster(test: object, rc: RedisCluster, ns: str) -> None:
    test(rc, ns)  # type: ignore[operator]


def test_two_drift_stages_share_one_incident_on_a_cluster(rc: RedisCluster, ns: str) -> None:
    # Two workers (one partition each) close merged windows, decide through the shared policy
    # and keep one incident book: one incident, opened once, resolved once.
    incident_tests.test_a_lasting_drift_over_20_windows_is_one_incident_resolved_after_it_stops((rc, ns))  # type: ignore[arg-type]
    incident_tests.test_a_version_no_longer_served_has_its_incident_superseded_once((rc, ns + "-s"))  # type: ignore[arg-type]
    # The policy, the version's alert history and its incidents share the version's slot.
    slots = {key_slot(policy_key(ns, "fraud", 1)), key_slot(incidents_key(ns, "fraud", 1))}
    assert len(slots) == 1 and rc.hlen(incidents_key(ns, "fraud", 1)) == 1


def test_the_registry_runs_its_transactions_on_a_cluster(rc: RedisCluster, ns: str) -> None:
    from tests.integration.test_registry import _register
    from tests.integration.worker_support import trained

    registry = ModelRegistry(rc, ns)
    first, second = trained(seed=0), trained(seed=1)
    v1 = _register(registry, first)
    v2 = _register(registry, second)
    registry.promote("fraud", v1)
    registry.promote("fraud", v2)
    registry.rollback("fraud")
    production = registry.deployment("fraud").production
    assert production is not None and production.version == v1
    meta, _ = registry.load("fraud", v1)
    assert meta.sha256 == first.sha256 and [v.version for v in registry.versions("fraud")] == [v1, v2]


def test_a_worker_streams_through_a_killed_redis_master(
    tmp_path: Path,
    stack_settings: Settings,
    new_prefix: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker on the cluster (events through the shared stack's broker, topics of its own):
    a master holding feature-store partitions is SIGKILLed mid-stream; the worker waits until
    its replica took over, then every valid event is predicted and no entity's ``count_24h``
    counts an event twice or misses one."""
    n = 8000
    with PrivateCluster(tmp_path, kafka_brokers=0, redis_cluster=True) as pc:
        s = stack_settings.model_copy(
            update={"topic_prefix": new_prefix("rcw"), "redis_url": pc.redis_cluster_url}
        )
        create_topics(AdminClient(s.kafka_client_config()), Topics(s.topic_prefix), 6)
        register(s)
        rc = s.redis_client()
        assert isinstance(rc, RedisCluster)
        w = start_worker(s)
        sample = w.worker.metrics.registry.get_sample_value
        up = lambda: sample("driftline_dependency_up", {"dependency": "redis"})  # noqa: E731
        try:
            stream = BackgroundStream(s, rate=400, n=n)
            wait_until(lambda: (sample("driftline_events_consumed_total") or 0) > n // 4, timeout=120)
            # Replication is asynchronous: the worker commits a batch only once a replica of
            # every master has its writes (its replica barrier), so the kill may land anywhere.
            assert isinstance(w.worker.replicated, ReplicaBarrier)
            victim = rc.get_node_from_key(keys.fs_tag(s.topic_prefix, "fraud", 0)).port
            with caplog.at_level(logging.WARNING, logger="driftline.dependency"):
                pc.kill(f"redis-{victim}")
                wait_until(lambda: up() == 0, timeout=30, every=0.05)  # the worker says so, and waits
                wait_until(lambda: up() == 1, timeout=60)  # the replica took over: it resumes
                stream.join()
            said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(said) == 1, said  # once, not once per retry
            served = assert_scored(s, n, exactly_once=False)
            assert_counts_exact(s, served)
            assert w.thread.is_alive() and not w.errors, w.errors
            print(f"outage waits: {sample('driftline_outage_waits_total', {'dependency': 'redis'})}")
        finally:
            w.stop()


def test_the_replica_barrier_waits_for_every_masters_replica_and_refuses_a_silent_one(
    cluster: PrivateCluster, rc: RedisCluster, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis replicates asynchronously; the barrier a worker runs before each commit returns once
    a replica of every master holds what was written before it, and raises (an outage: the batch
    is redone, not committed) while a master's connected replica does not answer."""
    barrier = ReplicaBarrier(rc, ns, timeout_ms=500)
    store = OnlineStore(rc, ns, fraud_feature_view())
    entities = [f"card-{i}" for i in range(60)]
    store.write_batch(
        entities,
        [1.7e9 + i for i in range(60)],
        {"amount": [float(i) for i in range(60)], "merchant_category": ["grocery"] * 60},
        partitions=[i % 6 for i in range(60)],
        offsets=[i // 6 for i in range(60)],
        source="rc.events",
    )
    barrier()
    for master in rc.get_primaries():  # every master's replica has the batch's hashes already
        link = redis.Redis(master.host, master.port).info("replication")["slave0"]
        replica = redis.Redis(link["ip"], int(link["port"]))
        for p in range(6):
            key = store.entity_key(entities[p], p)
            if rc.get_node_from_key(key).name == master.name:
                assert replica.execute_command("READONLY") and replica.exists(key), (master.name, key)

    # A replica stopped (SIGSTOP: still connected, never acknowledging): its master's writes are
    # on one node only, so the barrier refuses until the replica answers again.
    victim = next(n for n in cluster.stack.redis_cluster_nodes() if _role(n.port) == "slave")
    pid = cluster.stack._redis_node_pid(victim)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(redis.ConnectionError, match="no replica acknowledged"):
            barrier()
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: _barrier_passes(barrier), timeout=30)


def _role(port: int) -> str:
    return str(redis.Redis(port=port).info("replication")["role"])


def _barrier_passes(barrier: ReplicaBarrier) -> bool:
    try:
        barrier()
        return True
    except redis.ConnectionError:
        return False


def test_delete_namespace_removes_tagged_and_untagged_keys_on_a_cluster(rc: RedisCluster, ns: str) -> None:
    """What the benchmarks clean up with: every key of the namespace, whatever its slot."""
    mine = [keys.fs_entity(ns, "v", p, "e") for p in range(6)] + [keys.fs_where(ns, "v", "e")]
    other = keys.fs_entity(ns + "x", "v", 0, "e")
    for key in [*mine, other]:
        rc.set(key, 1)
    assert delete_namespace(rc, ns) == len(mine)
    assert not any(rc.exists(k) for k in mine) and rc.exists(other)
    rc.delete(other)
