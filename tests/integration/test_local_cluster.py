"""The local clusters of `driftline stack up --redis-cluster --kafka-brokers 3`, started by the same
`LocalStack` code on free ports in a temporary directory (never the shared stack's 6379/9092):
a Redis Cluster that survives a killed master, and a 3-broker Kafka whose topics (created the way
Driftline creates them) have 3 replicas and survive a killed broker with acks=all."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from redis.cluster import RedisCluster

from driftline.redis_cluster import parse_cluster_url
from driftline.settings import Settings
from driftline.stack import LocalStack, StackShape, _alive
from driftline.stack_nodes import (
    REDIS_CLUSTER_BUS_OFFSET,
    REDIS_CLUSTER_NODES,
    Node,
    cluster_info,
    cluster_ok,
)
from stream.topics import TOPIC_CONFIGS, TOPIC_PARTITIONS, Topics, create_topics
from tests.helpers import run_cli
from tests.integration.worker_support import wait_until
from tests.private_stack import PrivateCluster, free_port, free_port_block

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[PrivateCluster]:
    with PrivateCluster(tmp_path, kafka_brokers=0, redis_cluster=True) as pc:
        yield pc


@pytest.fixture
def kafka_cluster(tmp_path: Path) -> Iterator[PrivateCluster]:
    with PrivateCluster(tmp_path, kafka_brokers=3, redis_cluster=False) as pc:
        yield pc


def _client(url: str) -> RedisCluster:
    return RedisCluster(startup_nodes=parse_cluster_url(url).startup_nodes(), decode_responses=True)


def _masters(rc: RedisCluster) -> dict[str, str]:
    """Master address -> its replica's address, from the cluster's own view."""
    nodes: dict[str, Any] = rc.cluster_nodes()
    by_id = {v["node_id"]: k.split("@")[0] for k, v in nodes.items()}
    return {
        by_id[v["master_id"]]: k.split("@")[0]
        for k, v in nodes.items()
        if "slave" in v["flags"] and "fail" not in v["flags"]
    }


def test_redis_cluster_serves_every_slot_and_survives_a_killed_master(redis_cluster: PrivateCluster) -> None:
    pc = redis_cluster
    nodes = pc.stack.redis_cluster_nodes()
    assert len(nodes) == 6 and cluster_ok(nodes)
    assert all(cluster_info(n)["cluster_state"] == "ok" for n in nodes)

    env = {**os.environ, **pc.settings.as_env(), "COLUMNS": "250"}
    status = run_cli("stack", "status", env=env)  # exit 1: this stack's Kafka and Redis are not up
    lines = {line.split()[1]: line for line in status.stdout.splitlines() if line.split()[1:2]}
    for node in nodes:
        assert "running" in lines[node.name], status.stdout
    roles = [lines[n.name] for n in nodes]
    assert sum("master" in r for r in roles) == 3 and sum("replica of" in r for r in roles) == 3

    rc = _client(pc.redis_cluster_url)
    keys = [f"t:{i}" for i in range(300)]
    for key in keys:
        rc.set(key, key.upper())
    holders = {rc.get_node_from_key(k).name for k in keys}
    assert len(holders) == 3  # the keys' slots are spread over all three masters
    replicas = _masters(rc)
    assert set(replicas) == holders
    # Replication is asynchronous: WAIT until each master's replica has every write, so that
    # what the failover may lose is not the question here.
    for master in holders:
        host, port = master.rsplit(":", 1)
        assert redis.Redis(host, int(port)).execute_command("WAIT", 1, 10_000) == 1

    victim = rc.get_node_from_key(keys[0]).name
    port = int(victim.rsplit(":", 1)[1])
    pc.kill(f"redis-{port}")
    survivors = [n for n in nodes if n.port != port]
    promoted = next(n for n in survivors if n.address == replicas[victim])

    def failed_over() -> bool:
        infos = [cluster_info(n) for n in survivors]
        return all(i.get("cluster_state") == "ok" for i in infos) and _role(promoted) == "master"

    wait_until(failed_over, timeout=30, every=0.25)
    fresh = _client(pc.redis_cluster_url)  # the startup nodes include the dead one
    assert [fresh.get(k) for k in keys] == [k.upper() for k in keys]
    assert fresh.get_node_from_key(keys[0]).name == promoted.address
    fresh.set(keys[0], "after")  # the promoted replica takes writes
    assert rc.get(keys[0]) == "after"  # and the old client follows the slot to it

    pids = [pc.pid(n.name) for n in survivors]
    down = run_cli("stack", "down", env=env)
    assert down.returncode == 0 and down.stdout.count("redis-") == 5, down.stdout
    assert not any(pid is not None and _alive(pid) for pid in pids)
    assert not (pc.settings.stack_dir / "shape.json").exists()


def _role(node: Node) -> str:
    return str(redis.Redis(node.host, node.port, socket_timeout=1).execute_command("ROLE")[0].decode())


def test_three_brokers_replicate_driftline_topics_and_survive_a_killed_broker(
    kafka_cluster: PrivateCluster,
) -> None:
    pc = kafka_cluster
    s = pc.settings
    assert len(s.kafka_bootstrap.split(",")) == 3
    admin = AdminClient(s.kafka_client_config())
    topics = Topics(s.topic_prefix)
    create_topics(admin, topics, partitions=3, replication_factor=s.replication_factor)  # as the CLI does
    expected = sum(TOPIC_PARTITIONS.get(short, 3) for short in TOPIC_CONFIGS)

    def replicated() -> bool:  # once every broker's metadata has the new topics
        meta: Any = admin.list_topics(timeout=10)
        parts = [
            p for name in topics.all() if name in meta.topics for p in meta.topics[name].partitions.values()
        ]
        return len(parts) == expected and all(len(p.replicas) == 3 and len(p.isrs) == 3 for p in parts)

    wait_until(replicated, timeout=30)
    meta: Any = admin.list_topics(timeout=10)
    assert len(meta.brokers) == 3
    resource = ConfigResource("topic", topics.events)
    min_isr: list[str] = []

    def described() -> bool:  # the broker asked may not know the topic yet
        try:
            min_isr.append(admin.describe_configs([resource])[resource].result()["min.insync.replicas"].value)
        except KafkaException:
            return False
        return True

    wait_until(described, timeout=30)
    assert min_isr == ["2"]  # the brokers' default, which Driftline's topics inherit

    producer = Producer(s.kafka_client_config(acks="all", **{"enable.idempotence": True}))
    _produce(producer, topics.events, range(0, 200))
    assert _consume(s.kafka_client_config(), topics.events) == set(range(200))

    # Metadata comes from any broker: ask until the one asked knows the topic (it did above, but
    # the connection may have moved to a broker whose metadata is a moment behind).
    latest: list[Any] = []

    def knows_events() -> bool:
        latest.append(admin.list_topics(timeout=10))
        return topics.events in latest[-1].topics

    wait_until(knows_events, timeout=30)
    leader = latest[-1].topics[topics.events].partitions[0].leader
    pc.kill(f"kafka-{leader}")
    # acks=all still succeeds with 2 of 3 replicas in sync (min.insync.replicas=2): once the
    # controller fences the dead broker, its partitions get new leaders.
    _produce(producer, topics.events, range(200, 400))
    assert _consume(s.kafka_client_config(), topics.events) == set(range(400))
    statuses = {st.name: st for st in pc.stack.status()}
    assert not statuses[f"kafka-{leader}"].answering
    assert sum(st.answering for n, st in statuses.items() if n.startswith("kafka-")) == 2


def _produce(producer: Producer, topic: str, values: range) -> None:
    errors: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for v in values:
        producer.produce(topic, key=str(v), value=str(v), on_delivery=delivered)
    assert producer.flush(60) == 0 and not errors, errors


def _consume(config: dict[str, Any], topic: str) -> set[int]:
    """Every value of `topic`, read from the start by a new consumer group."""
    consumer = Consumer({**config, "group.id": f"t-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        seen: list[int] = []
        wait_until(lambda: _poll(consumer, seen) and _at_end(consumer, topic), timeout=60, every=0)
        assert len(seen) == len(set(seen))  # idempotent producer: no duplicate after the failover
        return set(seen)
    finally:
        consumer.close()


def _poll(consumer: Consumer, seen: list[int]) -> bool:
    for msg in consumer.consume(500, timeout=0.5):
        assert msg.error() is None, msg.error()
        seen.append(int(msg.value() or b"-1"))
    return True


def _at_end(consumer: Consumer, topic: str) -> bool:
    assigned = consumer.assignment()
    if not assigned:
        return False
    for tp in consumer.position(assigned):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=5)
        if (tp.offset if tp.offset >= 0 else low) != high:  # no position yet: nothing read
            return False
    return True


def test_cli_up_redis_cluster_prints_its_url_a_plain_up_reuses_it_and_down_stops_every_node(
    tmp_path: Path,
) -> None:
    kafka = free_port_block(2)
    base = free_port_block(REDIS_CLUSTER_NODES, REDIS_CLUSTER_BUS_OFFSET)
    s = Settings(
        kafka_bootstrap=f"127.0.0.1:{kafka}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=tmp_path / "stack",
        kafka_heap="256m",
    )
    env = {**os.environ, **s.as_env(), "COLUMNS": "250"}
    # What the test stops if the CLI's `down` does not.
    fallback = LocalStack(s, log=lambda _m: None, shape=StackShape(redis_cluster_port=base))
    try:
        up = run_cli("stack", "up", "--redis-cluster", "--redis-cluster-port", str(base), env=env)
        assert up.returncode == 0, up.stderr
        url = next(
            line.split(": ", 1)[1] for line in up.stdout.splitlines() if line.startswith("redis cluster: ")
        )
        assert parse_cluster_url(url).nodes == tuple(("127.0.0.1", p) for p in range(base, base + 6))
        assert cluster_ok(fallback.redis_cluster_nodes())

        again = run_cli("stack", "up", env=env)  # no options: the stack's shape since `up`
        assert again.returncode == 0, again.stderr
        assert again.stderr.count("already running") == 8 and "started" not in again.stderr, again.stderr
        assert f"redis cluster: {url}" in again.stdout
        refused = run_cli("stack", "up", "--kafka-brokers", "3", env=env)
        assert refused.returncode == 1 and "runs a 1-broker Kafka" in refused.stderr, refused.stderr
        moved = run_cli("stack", "up", "--redis-cluster-port", str(base + 100), env=env)
        assert moved.returncode == 1 and f"Redis Cluster from port {base}" in moved.stderr, moved.stderr

        status = run_cli("stack", "status", env=env)
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("running") == 8 and status.stdout.count("replica of") == 3
    finally:
        down = run_cli("stack", "down", env=env)
        fallback.down(timeout=10)  # whatever the CLI left (nothing, if it works)
    assert down.returncode == 0 and down.stdout.count("redis-") == 6 and "kafka (pid" in down.stdout
    after = run_cli("stack", "status", env=env)
    assert after.returncode == 1 and after.stdout.count("stopped") == 2  # the default stack's two
