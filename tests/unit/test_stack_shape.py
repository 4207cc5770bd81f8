"""The local stack's shapes (`driftline stack up [--kafka-brokers N] [--redis-cluster]`): which
nodes on which ports and directories, what each broker's config says, and what `status` and
`down` find from the recorded shape. Nothing is started here."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from driftline.redis_cluster import parse_cluster_url
from driftline.settings import Settings
from driftline.stack import LocalStack, StackError, StackShape
from driftline.stack_nodes import cluster_node_args


def _settings(tmp_path: Path, kafka_controller_port: int | None = None) -> Settings:
    return Settings(
        kafka_bootstrap="127.0.0.1:19092",
        kafka_controller_port=kafka_controller_port,
        redis_url="redis://127.0.0.1:16379/0",
        stack_dir=tmp_path,
    )


def _props(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_the_default_stack_is_one_broker_as_before(tmp_path: Path) -> None:
    stack = LocalStack(_settings(tmp_path), log=lambda _m: None)
    assert stack.shape.is_default
    [node] = stack.kafka_nodes()
    assert (node.name, node.port, node.controller_port, node.dir) == (
        "kafka",
        19092,
        19093,
        tmp_path / "kafka",
    )
    assert stack.redis_cluster_nodes() == [] and stack.redis_cluster_url is None
    assert stack.kafka_bootstrap == "127.0.0.1:19092"
    props = _props(stack._write_kafka_config())
    assert props["node.id"] == "1" and props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "kafka" / "data")
    for key in ("default.replication.factor", "min.insync.replicas", "offsets.topic.replication.factor"):
        assert props[key] == "1", key
    assert props["transaction.state.log.replication.factor"] == props["transaction.state.log.min.isr"] == "1"
    assert not (tmp_path / "shape.json").exists()


def test_three_brokers_form_one_quorum_with_replication_factor_3_and_min_isr_2(tmp_path: Path) -> None:
    stack = LocalStack(_settings(tmp_path), log=lambda _m: None, shape=StackShape(kafka_brokers=3))
    nodes = stack.kafka_nodes()
    assert [(n.name, n.node_id, n.port, n.controller_port) for n in nodes] == [
        ("kafka-1", 1, 19092, 19095),
        ("kafka-2", 2, 19093, 19096),
        ("kafka-3", 3, 19094, 19097),
    ]
    assert stack.kafka_bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    configs = [_props(stack._write_kafka_config(n)) for n in nodes]
    voters = "1@127.0.0.1:19095,2@127.0.0.1:19096,3@127.0.0.1:19097"
    for node, props in zip(nodes, configs, strict=True):
        assert props["node.id"] == str(node.node_id) and props["controller.quorum.voters"] == voters
        assert (
            props["listeners"]
            == f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
        )
        assert props["log.dirs"] == str(tmp_path / node.name / "data")
        assert props["default.replication.factor"] == props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"


def test_two_brokers_replicate_twice_and_accept_one_in_sync(tmp_path: Path) -> None:
    stack = LocalStack(_settings(tmp_path, kafka_controller_port=29000), shape=StackShape(kafka_brokers=2))
    nodes = stack.kafka_nodes()
    assert [n.controller_port for n in nodes] == [29000, 29001]  # an explicit controller port leads
    props = _props(stack._write_kafka_config(nodes[1]))
    assert props["default.replication.factor"] == "2" and props["min.insync.replicas"] == "1"


def test_redis_cluster_nodes_have_their_own_ports_and_dirs(tmp_path: Path) -> None:
    stack = LocalStack(_settings(tmp_path), shape=StackShape(redis_cluster_port=7100))
    nodes = stack.redis_cluster_nodes()
    assert [n.port for n in nodes] == list(range(7100, 7106))
    assert [n.dir for n in nodes] == [tmp_path / "redis-cluster" / str(p) for p in range(7100, 7106)]
    assert len({n.name for n in nodes}) == 6 and "redis" not in {n.name for n in nodes}
    assert stack.redis_cluster_url is not None
    assert parse_cluster_url(stack.redis_cluster_url).nodes == tuple(
        ("127.0.0.1", p) for p in range(7100, 7106)
    )
    args = cluster_node_args(nodes[0])
    assert args[args.index("--cluster-enabled") + 1] == "yes" and args[args.index("--port") + 1] == "7100"
    assert args[args.index("--cluster-config-file") + 1] == str(nodes[0].dir / "nodes.conf")


def test_settings_on_the_cluster_still_find_the_single_redis_where_it_runs(tmp_path: Path) -> None:
    """`driftline demo` with DRIFTLINE_REDIS_URL on the cluster: `up` and `down` mean the single
    Redis on its own port, not the cluster's first node (which `down` would then miss)."""
    on_cluster = _settings(tmp_path).model_copy(update={"redis_url": "redis+cluster://127.0.0.1:7100"})
    stack = LocalStack(on_cluster, shape=StackShape(redis_cluster_port=7100))
    assert (stack.redis_host, stack.redis_port) == ("127.0.0.1", 6379)
    assert stack.redis_cluster_nodes()[0].port == 7100


def test_status_and_down_find_the_recorded_shape_and_down_forgets_it(tmp_path: Path) -> None:
    shape = StackShape(kafka_brokers=3, redis_cluster_port=7100)
    LocalStack(_settings(tmp_path), shape=shape)._remember_shape()
    later = LocalStack(_settings(tmp_path))  # `stack status` / `stack down`: no options
    assert later.shape == shape
    assert len(later.kafka_nodes()) == 3 and len(later.redis_cluster_nodes()) == 6
    assert later.down(timeout=1) == []  # nothing of it runs
    assert not (tmp_path / "shape.json").exists() and LocalStack(_settings(tmp_path)).shape.is_default


def test_the_secured_stack_refuses_a_cluster_shape(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="one broker and one Redis"):
        LocalStack(_settings(tmp_path), secure=True, shape=StackShape(kafka_brokers=3))
    with pytest.raises(ValidationError):
        StackShape(redis_cluster_port=60000)  # its bus ports would pass 65535


def test_replication_factor_is_the_brokers_default_unless_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no driftline.yaml
    monkeypatch.delenv("DRIFTLINE_REPLICATION_FACTOR", raising=False)
    assert Settings().replication_factor == -1
    assert Settings(replication_factor=3).replication_factor == 3
    for bad in (0, -2):
        with pytest.raises(ValidationError):
            Settings(replication_factor=bad)
