"""A private Kafka broker + redis-server for tests that stop, kill or flush a service.

The shared local stack (`driftline stack up`) serves every other test of the run, so a test that
restarts a broker, kills Redis or runs ``FLUSHALL`` gets its own services: the same jars and the
same Debian ``redis-server``, started by the same ``LocalStack`` code on free ports in a temporary
directory, and stopped (data removed) afterwards.

    with PrivateStack(tmp_path) as ps:
        s = ps.settings            # Settings pointing at the private broker and Redis
        ps.stop_kafka(); ps.start_kafka()
        ps.kill_redis(); ps.start_redis()

    with PrivateStack(tmp_path, secure=True) as ps:   # SASL_SSL Kafka, TLS-only Redis, ACL users
        s = ps.settings            # the CLI/retrainer user ("driftline"), every secret included
        w = ps.role_settings("worker")  # the worker's Redis user
        env = ps.env("worker")     # DRIFTLINE_* variables for a `driftline` child process

    with PrivateCluster(tmp_path, kafka_brokers=3, redis_cluster=True) as pc:
        pc.settings                # kafka_bootstrap: all three brokers
        pc.redis_cluster_url       # redis+cluster://... (3 masters + 3 replicas)
        pc.kill("kafka-2"); pc.kill(f"redis-{port}")
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
import uuid
from pathlib import Path
from types import TracebackType

from driftline.settings import Settings
from driftline.stack import LocalStack, StackShape, _alive
from driftline.stack_nodes import REDIS_CLUSTER_BUS_OFFSET, REDIS_CLUSTER_NODES


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice), for a private service."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(n: int, offset: int = 0, low: int = 20_000) -> int:
    """The first of `n` consecutive ports nothing is bound to (nor, with `offset`, each port +
    offset: a Redis Cluster node's bus), all below the kernel's ephemeral range so that no
    client's local port takes one before the service binds it."""
    high = _ephemeral_start() - offset - n
    for _ in range(200):
        base = random.randrange(low, high)
        ports = [*range(base, base + n), *(range(base + offset, base + offset + n) if offset else ())]
        if all(_bindable(port) for port in ports):
            return base
    raise RuntimeError(f"no {n} consecutive free ports between {low} and {high}")


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PrivateStack:
    """One private single-node KRaft broker and one redis-server (AOF on), on free ports."""

    def __init__(
        self, directory: Path, topic_prefix: str | None = None, kafka: bool = True, secure: bool = False
    ) -> None:
        self.directory = directory
        self.with_kafka = kafka
        kafka_port, controller_port, redis_port = free_port(), free_port(), free_port()
        self.base = Settings(
            kafka_bootstrap=f"127.0.0.1:{kafka_port}",
            kafka_controller_port=controller_port,
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            topic_prefix=topic_prefix or f"private-{uuid.uuid4().hex[:8]}",
            stack_dir=directory / "stack",
            kafka_heap="384m",
        )
        self.stack = LocalStack(self.base, log=lambda _m: None, secure=secure)
        self.settings = self.role_settings("driftline") if secure else self.base

    def role_settings(self, role: str) -> Settings:
        """The settings of one component (its own Redis user) on the secured stack."""
        assert self.stack.security is not None, "a plain private stack has no roles"
        return self.stack.security.client_settings(self.base, role)

    def env(self, role: str = "driftline") -> dict[str, str]:
        """DRIFTLINE_* variables for a `driftline` child process of `role` on this stack."""
        s = self.role_settings(role) if self.stack.security is not None else self.settings
        return {**os.environ, **s.as_env(), "COLUMNS": "200"}

    # ---- whole stack ----------------------------------------------------------------------
    def __enter__(self) -> PrivateStack:
        self.stack.root.mkdir(parents=True, exist_ok=True)
        self.start_redis()
        if self.with_kafka:
            self.start_kafka()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stack.down(timeout=20)

    # ---- one service ----------------------------------------------------------------------
    def start_kafka(self, timeout: float = 120) -> None:
        self.stack._up_kafka(timeout)

    def start_redis(self, timeout: float = 60) -> None:
        self.stack._up_redis(timeout)

    def stop_kafka(self) -> None:
        """A clean broker shutdown (SIGTERM), as an operator's restart does."""
        self._signal(self.stack.kafka_pid(), "kafka", signal.SIGTERM)

    def kill_kafka(self) -> None:
        self._signal(self.stack.kafka_pid(), "kafka", signal.SIGKILL)

    def stop_redis(self) -> None:
        self._signal(self.stack.redis_pid(), "redis", signal.SIGTERM)

    def kill_redis(self) -> None:
        self._signal(self.stack.redis_pid(), "redis", signal.SIGKILL)

    def _signal(self, pid: int | None, name: str, sig: signal.Signals, timeout: float = 60) -> None:
        assert pid is not None, f"private {name} is not running"
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), f"private {name} (pid {pid}) did not stop"
        (self.stack.root / f"{name}.pid").unlink(missing_ok=True)


class PrivateCluster:
    """A private multi-broker Kafka and/or Redis Cluster on free ports, started by the same
    ``LocalStack`` code as ``driftline stack up --kafka-brokers N --redis-cluster``:

        with PrivateCluster(tmp_path, kafka_brokers=3, redis_cluster=True) as pc:
            pc.settings            # kafka_bootstrap lists every broker
            pc.redis_cluster_url   # redis+cluster://127.0.0.1:<port>,... (6 nodes)
            pc.kill("kafka-2"); pc.kill("redis-<port>")

    `kafka_brokers` 0: no Kafka. Each broker gets a 384 MiB heap (2 cores, 24 GiB shared)."""

    def __init__(
        self,
        directory: Path,
        kafka_brokers: int = 3,
        redis_cluster: bool = True,
        topic_prefix: str | None = None,
    ) -> None:
        self.with_kafka = kafka_brokers > 0
        brokers = max(kafka_brokers, 1)
        kafka_base = free_port_block(2 * brokers)  # the brokers' ports, then their controllers'
        redis_base = free_port_block(REDIS_CLUSTER_NODES, REDIS_CLUSTER_BUS_OFFSET) if redis_cluster else None
        self.settings = Settings(
            kafka_bootstrap=",".join(f"127.0.0.1:{kafka_base + i}" for i in range(brokers)),
            redis_url=f"redis://127.0.0.1:{free_port()}/0",  # the single Redis, not started here
            topic_prefix=topic_prefix or f"private-{uuid.uuid4().hex[:8]}",
            stack_dir=directory / "stack",
            kafka_heap="384m",
        )
        shape = StackShape(kafka_brokers=brokers, redis_cluster_port=redis_base)
        self.stack = LocalStack(self.settings, log=lambda _m: None, shape=shape)

    @property
    def redis_cluster_url(self) -> str:
        url = self.stack.redis_cluster_url
        assert url is not None, "this private cluster has no Redis Cluster"
        return url

    def __enter__(self) -> PrivateCluster:
        try:
            if self.stack.shape.redis_cluster_port is not None:
                self.stack._up_redis_cluster(timeout=60)
            if self.with_kafka:
                self.stack._up_kafka(timeout=120)
        except BaseException:
            self.stack.down(timeout=20)
            raise
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stack.down(timeout=20)

    def pid(self, name: str) -> int | None:
        """The pid of node `name` (``kafka-1``, ``redis-<port>``), None if it is not running."""
        for node in self.stack.kafka_nodes():
            if node.name == name:
                return self.stack._kafka_node_pid(node)
        for node in self.stack.redis_cluster_nodes():
            if node.name == name:
                return self.stack._redis_node_pid(node)
        raise KeyError(name)

    def kill(self, name: str, timeout: float = 30) -> None:
        """SIGKILL node `name`, as a crash would, and wait until it is gone."""
        pid = self.pid(name)
        assert pid is not None, f"{name} is not running"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), f"{name} (pid {pid}) did not die"
