"""The processes of the local stack (`Node`) and what the stack asks a Redis Cluster node.

A node is one broker or one redis-server that ``driftline stack up`` starts: its pid file is
``<stack_dir>/<name>.pid`` and its files are in its own directory. The Redis Cluster's nodes run
with ``cluster-enabled yes`` and a short node timeout (`REDIS_CLUSTER_NODE_TIMEOUT_MS`), so a
killed master's replica takes over within seconds on a local machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_CLUSTER_NODES = 6  # 3 masters, each with one replica
REDIS_CLUSTER_BUS_OFFSET = 10_000  # Redis's cluster bus listens on port + 10000
# A master unreachable this long is failed over to its replica (Redis's default is 15 s; a
# local cluster for tests wants a quick failover, but not one that a busy 2-core machine's
# pauses trigger).
REDIS_CLUSTER_NODE_TIMEOUT_MS = 3000


@dataclass(frozen=True)
class Node:
    """One process of the stack: its pid file is ``<root>/<name>.pid``, its files in `dir`."""

    name: str
    host: str
    port: int
    dir: Path
    node_id: int = 1  # Kafka's node.id
    controller_port: int = 0  # Kafka's KRaft controller listener

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def cluster_node_args(node: Node) -> list[str]:
    """redis-server arguments of one Redis Cluster node (its ``nodes.conf`` in its own dir)."""
    return [
        "--port", str(node.port),
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(node.dir / "nodes.conf"),
        "--cluster-node-timeout", str(REDIS_CLUSTER_NODE_TIMEOUT_MS),
        # One replica per master: nothing to gain by waiting 5 s (the default) for more to
        # join a sync, and the stack is ready only once every replica synced.
        "--repl-diskless-sync-delay", "0",
    ]  # fmt: skip


def _client(node: Node) -> redis.Redis:
    # No retries: a probe of a node that is down answers at once (redis-py retries with backoff
    # for seconds by default).
    return redis.Redis(
        node.host,
        node.port,
        socket_timeout=1,
        socket_connect_timeout=1,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def node_answering(node: Node) -> bool:
    try:
        return bool(_client(node).ping())
    except redis.RedisError:
        return False


def cluster_info(node: Node) -> dict[str, str]:
    """``CLUSTER INFO`` of one node (empty if it does not answer)."""
    try:
        info = _client(node).execute_command("CLUSTER INFO")
    except redis.RedisError:
        return {}
    return {str(k): str(v) for k, v in info.items()}


def cluster_ok(nodes: list[Node]) -> bool:
    """Every node says ``cluster_state:ok``, knows all the others, sees half of them as replicas
    (right after ``--cluster create`` the slots are served before every node has heard which
    nodes replicate which master), and every replica finished its first sync with its master
    (until then no write is on two nodes: the workers' replica barrier would wait)."""
    infos = [cluster_info(node) for node in nodes]
    if not nodes or not all(
        i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == str(len(nodes)) for i in infos
    ):
        return False
    return all(_replicas_seen(node) == len(nodes) // 2 and _synced(node) for node in nodes)


def _synced(node: Node) -> bool:
    """A master, or a replica whose link to its master is up (its first sync done)."""
    try:
        info = _client(node).info("replication")
    except redis.RedisError:
        return False
    return info.get("role") == "master" or info.get("master_link_status") == "up"


def _replicas_seen(node: Node) -> int:
    try:
        view = _client(node).execute_command("CLUSTER NODES")
    except redis.RedisError:
        return -1
    return sum("slave" in v["flags"] for v in view.values())


def cluster_role(node: Node) -> str:
    """``master 0-5460`` or ``replica of 127.0.0.1:7000``, as the node itself sees it, with its
    ``cluster_state`` when that is not ok; ``-`` when it does not answer."""
    try:
        nodes = _client(node).execute_command("CLUSTER NODES")
    except redis.RedisError:
        return "-"
    by_id = {view["node_id"]: address.split("@")[0] for address, view in nodes.items()}
    for view in nodes.values():
        if "myself" not in view["flags"]:
            continue
        if "master" in view["flags"]:
            role = ("master " + ",".join("-".join(r) for r in view["slots"])).rstrip()
        else:
            role = f"replica of {by_id.get(view['master_id'], '?')}"
        state = cluster_info(node).get("cluster_state", "?")
        return role if state == "ok" else f"{role} (cluster_state:{state})"
    return "-"
