"""The local stack: real Kafka brokers (KRaft) and real redis-servers on this machine.

By default one Kafka broker and one Redis. ``--kafka-brokers N`` starts N KRaft nodes instead of
the one broker (each broker and controller, an N-voter quorum, replication factor ``min(N, 3)``
for new topics and ``min.insync.replicas`` one less); ``--redis-cluster`` starts, beside the
single Redis, a Redis Cluster of 3 masters and 3 replicas on consecutive ports (`StackShape`).

Kafka's jars come from Maven Central through Maven (``deploy/local/pom.xml``) into
``<cache_dir>/kafka-<version>/libs``; the brokers run with ``java``. Redis is Debian's
``redis-server``, installed with apt-get when missing (as root). Data, logs and pid files live
in ``<stack_dir>``: ``kafka/`` and ``redis/`` for the single services, ``kafka-<id>/`` per node
of a multi-broker Kafka, ``redis-cluster/<port>/`` per Redis Cluster node, and ``shape.json``,
what a non-default ``up`` started, so that ``status`` and ``down`` find every node. ``down``
stops only processes whose pid files it wrote and whose command line still matches, so it
never kills an unrelated process that reused a pid.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import redis
from pydantic import BaseModel, Field

from driftline.errors import DriftlineError
from driftline.redaction import scrub
from driftline.redis_cluster import cluster_url, is_cluster_url
from driftline.settings import Settings
from driftline.stack_nodes import (
    REDIS_CLUSTER_BUS_OFFSET,
    REDIS_CLUSTER_NODES,
    Node,
    cluster_info,
    cluster_node_args,
    cluster_ok,
    cluster_role,
    node_answering,
)
from driftline.stack_security import StackSecurity

KAFKA_VERSION = "3.9.1"
DEPLOY_LOCAL = Path(__file__).resolve().parents[1] / "deploy" / "local"


class StackError(DriftlineError):
    """A stack operation failed; the message says what to do about it."""


class StackShape(BaseModel):
    """What the stack runs beyond one broker and one Redis, kept in ``<stack_dir>/shape.json``
    from ``up`` to ``down``: a plain ``up``, ``status`` and ``down`` act on the recorded shape."""

    kafka_brokers: int = Field(1, ge=1, le=9)
    redis_cluster_port: int | None = Field(
        None, ge=1, le=65535 - REDIS_CLUSTER_BUS_OFFSET - REDIS_CLUSTER_NODES
    )

    @property
    def is_default(self) -> bool:
        return self.kafka_brokers == 1 and self.redis_cluster_port is None

    def with_options(self, kafka_brokers: int | None, redis_cluster_port: int | None) -> StackShape:
        """This (recorded) shape with what `stack up`'s options name instead (None: unchanged)."""
        return StackShape(
            kafka_brokers=self.kafka_brokers if kafka_brokers is None else kafka_brokers,
            redis_cluster_port=self.redis_cluster_port if redis_cluster_port is None else redis_cluster_port,
        )


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    pid: int | None  # pid of the process the stack started, if it is alive
    answering: bool
    role: str = ""

    @property
    def state(self) -> str:
        if self.answering:
            return "running" if self.pid else "running (not started by driftline)"
        return "starting or unhealthy" if self.pid else "stopped"


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is not running.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


class LocalStack:
    """The local brokers and Redis: plain (the default), or `secure` (SASL_SSL Kafka, TLS-only
    Redis with ACL users; its files under ``<stack_dir>/secure``). One start-up code for all:
    the secured stack only adds its properties and arguments (`StackSecurity`), a multi-broker
    Kafka or a Redis Cluster is more nodes of the same processes. `shape` None: what the stack
    dir records (``up`` without options: one broker, one Redis)."""

    def __init__(
        self,
        settings: Settings,
        log: Callable[[str], None] = print,
        secure: bool = False,
        shape: StackShape | None = None,
    ) -> None:
        if is_cluster_url(settings.redis_url):
            # Processes pointed at the cluster (DRIFTLINE_REDIS_URL) still mean the stack's single
            # Redis where it always runs: the cluster is the shape's, and its first node is no
            # single Redis (probing it with a cluster client would fail while the cluster is down).
            settings = settings.model_copy(update={"redis_url": Settings.model_fields["redis_url"].default})
        self.s = settings
        self.log = log
        self.kafka_host, self.kafka_port = settings.kafka_host_port
        self.redis_host, self.redis_port = settings.redis_host_port
        self.root = settings.stack_dir / "secure" if secure else settings.stack_dir
        self.shape = shape if shape is not None else self.recorded_shape()
        if secure and not self.shape.is_default:
            raise StackError(
                "the secured stack runs one broker and one Redis (no --kafka-brokers, --redis-cluster)"
            )
        self.kafka_dir = self.root / "kafka"
        self.redis_dir = self.root / "redis"
        self.libs = settings.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
        hosts = tuple(dict.fromkeys((self.kafka_host, self.redis_host, "127.0.0.1")))
        self.security = StackSecurity(self.root, hosts) if secure else None

    @property
    def probe(self) -> Settings:
        """The settings the stack's own health probes connect with (the admin user if secured)."""
        return self.security.client_settings(self.s) if self.security else self.s

    @property
    def redis_display(self) -> str:
        return self.probe.redis_display

    # ---- shape and nodes ------------------------------------------------------------------
    def recorded_shape(self) -> StackShape:
        path = self.root / "shape.json"
        return StackShape.model_validate_json(path.read_text()) if path.exists() else StackShape()

    def _remember_shape(self) -> None:
        path = self.root / "shape.json"
        if self.shape.is_default:
            path.unlink(missing_ok=True)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(self.shape.model_dump_json())

    def kafka_nodes(self, shape: StackShape | None = None) -> list[Node]:
        """One broker (``kafka``, as it always was), or `kafka-1` .. `kafka-N` on consecutive
        ports from the bootstrap port, their controllers on consecutive ports after them."""
        n = (shape or self.shape).kafka_brokers
        ctrl = self.s.kafka_controller_port or self.kafka_port + n
        if n == 1:
            return [Node("kafka", self.kafka_host, self.kafka_port, self.kafka_dir, 1, ctrl)]
        return [
            Node(
                f"kafka-{i}",
                self.kafka_host,
                self.kafka_port + i - 1,
                self.root / f"kafka-{i}",
                i,
                ctrl + i - 1,
            )
            for i in range(1, n + 1)
        ]

    def redis_cluster_nodes(self, shape: StackShape | None = None) -> list[Node]:
        base = (shape or self.shape).redis_cluster_port
        if base is None:
            return []
        return [
            Node(f"redis-{p}", self.redis_host, p, self.root / "redis-cluster" / str(p))
            for p in range(base, base + REDIS_CLUSTER_NODES)
        ]

    @property
    def kafka_bootstrap(self) -> str:
        """Every broker of the stack, for the clients' ``kafka_bootstrap``."""
        if self.shape.kafka_brokers == 1:
            return self.s.kafka_bootstrap
        return ",".join(node.address for node in self.kafka_nodes())

    @property
    def redis_cluster_url(self) -> str | None:
        nodes = self.redis_cluster_nodes()
        return cluster_url((n.host, n.port) for n in nodes) if nodes else None

    # ---- status ---------------------------------------------------------------------------
    def _pid(self, name: str, marker: str) -> int | None:
        pid_file = self.root / f"{name}.pid"
        if not pid_file.exists():
            return None
        pid = int(pid_file.read_text().strip() or 0)
        if pid and _alive(pid) and marker in _cmdline(pid):
            return pid
        pid_file.unlink(missing_ok=True)  # stale: the process is gone or the pid was reused
        return None

    def _kafka_node_pid(self, node: Node) -> int | None:
        return self._pid(node.name, str(node.dir))

    def _redis_node_pid(self, node: Node) -> int | None:
        return self._pid(node.name, f":{node.port}")

    def kafka_pid(self) -> int | None:
        return self._kafka_node_pid(self.kafka_nodes()[0])

    def redis_pid(self) -> int | None:
        return self._pid("redis", f":{self.redis_port}")

    def kafka_answering(self, timeout: float = 3.0, node: Node | None = None, brokers: int = 0) -> bool:
        """Kafka (or one `node`) answers a metadata request that lists at least `brokers` brokers."""
        host, port = (node.host, node.port) if node else (self.kafka_host, self.kafka_port)
        if not _port_open(host, port):
            return False
        from confluent_kafka.admin import AdminClient

        overrides: dict[str, str | int] = {"socket.timeout.ms": 2000}
        if node is not None:
            overrides["bootstrap.servers"] = node.address
        admin = AdminClient(self.probe.kafka_client_config(**overrides))
        try:
            return len(admin.list_topics(timeout=timeout).brokers) >= brokers
        except Exception:
            return False

    def redis_answering(self) -> bool:
        try:
            return bool(self.probe.redis_client(socket_timeout=1, connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def status(self) -> list[ServiceStatus]:
        kafka = self.kafka_nodes()
        statuses = [
            ServiceStatus(
                node.name,
                self.s.kafka_bootstrap if len(kafka) == 1 else node.address,
                self._kafka_node_pid(node),
                self.kafka_answering(node=node),
                "broker, controller",
            )
            for node in kafka
        ]
        statuses.append(
            ServiceStatus(
                "redis",
                f"{self.redis_host}:{self.redis_port}",
                self.redis_pid(),
                self.redis_answering(),
                "standalone",
            )
        )
        for node in self.redis_cluster_nodes():
            answering = node_answering(node)
            role = cluster_role(node) if answering else "-"
            statuses.append(
                ServiceStatus(node.name, node.address, self._redis_node_pid(node), answering, role)
            )
        return statuses

    # ---- up -------------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> list[ServiceStatus]:
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_running_shape()
        self._up_redis(timeout)
        if self.shape.redis_cluster_port is not None:
            self._up_redis_cluster(timeout)
        self._up_kafka(timeout)
        return self.status()

    def _check_running_shape(self) -> None:
        """Refuse to start a Kafka of another size, or a Redis Cluster on other ports, than the
        ones this stack runs (``stack down`` first); then record the shape."""
        recorded = self.recorded_shape()
        if recorded.kafka_brokers != self.shape.kafka_brokers and any(
            self._kafka_node_pid(n) for n in self.kafka_nodes(recorded)
        ):
            raise StackError(
                f"this stack runs a {recorded.kafka_brokers}-broker Kafka: `driftline stack down` first"
            )
        if recorded.redis_cluster_port != self.shape.redis_cluster_port and any(
            self._redis_node_pid(n) for n in self.redis_cluster_nodes(recorded)
        ):
            raise StackError(
                f"this stack runs a Redis Cluster from port {recorded.redis_cluster_port}: "
                "`driftline stack down` first"
            )
        self._remember_shape()

    def ensure_kafka_jars(self) -> Path:
        marker = self.libs / ".complete"
        if marker.exists():
            return self.libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("Maven (mvn) is needed to fetch Kafka's jars: apt-get install maven")
        self.log(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (once) ...")
        staging = self.libs.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(DEPLOY_LOCAL / "pom.xml"),
            f"-Dkafka.version={KAFKA_VERSION}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            raise StackError("Maven could not fetch Kafka's jars:\n" + "\n".join(tail))
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        marker.touch()
        return self.libs

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java or not Path(java).exists():
            raise StackError(
                "Java 17+ is needed for the local Kafka broker: apt-get install openjdk-17-jre-headless"
            )
        return java

    def _write_kafka_config(self, node: Node | None = None) -> Path:
        nodes = self.kafka_nodes()
        node = node or nodes[0]
        data = node.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        host, port, ctrl = node.host, node.port, node.controller_port
        listener = "SASL_SSL" if self.security else "PLAINTEXT"  # the clients' (and brokers') listener
        # Replicated on a multi-broker Kafka: a topic created with the broker's default
        # replication factor (Driftline's replication_factor -1) gets min(N, 3) replicas, and
        # an acks=all write needs all but one of them.
        replicas = min(len(nodes), 3)
        min_isr = str(max(1, replicas - 1))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes),
            "listeners": f"{listener}://{host}:{port},CONTROLLER://{host}:{ctrl}",
            "advertised.listeners": f"{listener}://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(self.s.partitions),
            "default.replication.factor": str(replicas),
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "6",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            "log.retention.hours": "24",
            "log.segment.bytes": str(64 * 1024 * 1024),
            **(self.security.kafka_properties() if self.security else {}),
        }
        path = node.dir / "server.properties"
        path.touch(mode=0o600)  # a secured broker's holds its own password
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _kafka_cluster_id(self, nodes: list[Node]) -> str:
        """The id the nodes' storage was formatted with (one id for all), or a new one."""
        for node in nodes:
            meta = node.dir / "data" / "meta.properties"
            if meta.exists():
                for line in meta.read_text().splitlines():
                    if line.startswith("cluster.id="):
                        return line.split("=", 1)[1].strip()
        return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

    def _up_kafka(self, timeout: float) -> None:
        nodes = self.kafka_nodes()
        if len(nodes) > 1:
            self._remember_shape()
        starting = [node for node in nodes if self._start_kafka_node(node, nodes)]
        for node in starting:
            self._wait(node.name, partial(self.kafka_answering, node=node), timeout, node.dir / "kafka.log")
            if len(nodes) > 1:
                self.log(f"{node.name}: answering at {node.address}")
        if len(nodes) > 1:  # every broker registered with the quorum, so replicas can be placed
            self._wait(
                "kafka", lambda: self.kafka_answering(brokers=len(nodes)), timeout, nodes[0].dir / "kafka.log"
            )
        if starting:
            self.log(f"kafka: ready at {self.kafka_bootstrap}")

    def _start_kafka_node(self, node: Node, nodes: list[Node]) -> bool:
        """Start one KRaft node unless it runs; True when the caller must wait for it."""
        where = self.s.kafka_bootstrap if len(nodes) == 1 else node.address
        pid = self._kafka_node_pid(node)
        if pid is not None and self.kafka_answering(node=node):
            self.log(f"{node.name}: already running at {where} (reused)")
            return False
        if pid is None and self.kafka_answering(node=node):
            self.log(f"{node.name}: a broker already answers at {where}; using it")
            return False
        if pid is None:
            for port in (node.port, node.controller_port):
                if _port_open(node.host, port):
                    raise StackError(f"port {port} is taken by another process; choose other ports")
            libs = self.ensure_kafka_jars()
            java = self._java()
            config = self._write_kafka_config(node)
            classpath = f"{libs}/*"
            log4j = f"-Dlog4j.configuration=file:{DEPLOY_LOCAL / 'log4j.properties'}"
            if not (node.dir / "data" / "meta.properties").exists():
                fmt = [
                    java,
                    "-cp",
                    classpath,
                    log4j,
                    "kafka.tools.StorageTool",
                    "format",
                    # `--cluster-id=` form: a random id may start with "-", which argparse4j
                    # would otherwise read as a flag (1 in 64 fresh machines failed to format).
                    f"--cluster-id={self._kafka_cluster_id(nodes)}",
                    "-c",
                    str(config),
                    # A secured broker's SCRAM users exist from the start (KRaft: at format time).
                    *(self.security.kafka_format_args() if self.security else []),
                ]
                result = subprocess.run(fmt, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    output = result.stdout + result.stderr
                    if self.security:  # the command line carried the SCRAM passwords
                        output = scrub(output, self.security.secrets().values())
                    raise StackError(f"formatting Kafka storage failed:\n{output}")
            log_file = (node.dir / "kafka.log").open("ab")
            heap = self.s.kafka_heap
            proc = subprocess.Popen(
                [
                    java,
                    f"-Xmx{heap}",
                    f"-Xms{heap}",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    log4j,
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(config),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives this command
            )
            (self.root / f"{node.name}.pid").write_text(str(proc.pid))
            self.log(f"{node.name}: started Apache Kafka {KAFKA_VERSION} (pid {proc.pid}), waiting ...")
        return True

    def ensure_redis_binary(self) -> str:
        return debian_binary("redis-server", "redis-server", self.log)

    def _start_redis(self, node: Node, port_args: list[str]) -> None:
        """Start one redis-server (AOF on, no RDB snapshots) with its files in ``node.dir``."""
        binary = self.ensure_redis_binary()
        node.dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [
                binary,
                *port_args,
                "--bind",
                node.host,
                "--dir",
                str(node.dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(node.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        (self.root / f"{node.name}.pid").write_text(str(proc.pid))
        self.log(f"{node.name}: started redis-server (pid {proc.pid})")

    def _up_redis(self, timeout: float) -> None:
        if self.redis_answering():
            owner = "reused" if self.redis_pid() else "not started by driftline; using it"
            self.log(f"redis: already running at {self.redis_host}:{self.redis_port} ({owner})")
            return
        if self.redis_pid() is None:
            node = Node("redis", self.redis_host, self.redis_port, self.redis_dir)
            self.redis_dir.mkdir(parents=True, exist_ok=True)  # the secured one's ACL file goes there
            port_args = (
                self.security.redis_args(self.redis_port, self.redis_dir)
                if self.security
                else ["--port", str(self.redis_port)]
            )
            self._start_redis(node, port_args)
        self._wait("redis", self.redis_answering, timeout, self.redis_dir / "redis.log")
        self.log(f"redis: ready at {self.redis_display}")

    def _up_redis_cluster(self, timeout: float) -> None:
        """Start the Redis Cluster's nodes, create the cluster once (``redis-cli --cluster
        create``; a restarted node finds the others in its ``nodes.conf``), and wait until
        every node says ``cluster_state:ok``."""
        self._remember_shape()
        nodes = self.redis_cluster_nodes()
        for node in nodes:
            if node_answering(node):
                owner = "reused" if self._redis_node_pid(node) else "not started by driftline; using it"
                self.log(f"{node.name}: already running at {node.address} ({owner})")
            elif self._redis_node_pid(node) is None:
                for port in (node.port, node.port + REDIS_CLUSTER_BUS_OFFSET):
                    if _port_open(node.host, port):
                        raise StackError(
                            f"port {port} is taken by another process; choose another --redis-cluster-port"
                        )
                self._start_redis(node, cluster_node_args(node))
        for node in nodes:
            self._wait(node.name, partial(node_answering, node), timeout, node.dir / "redis.log")
        if cluster_info(nodes[0]).get("cluster_slots_assigned") == "0":
            self._create_redis_cluster(nodes)
        self._wait("redis cluster", lambda: cluster_ok(nodes), timeout, nodes[0].dir / "redis.log")
        self.log(f"redis cluster: ready at {self.redis_cluster_url}")

    def _create_redis_cluster(self, nodes: list[Node]) -> None:
        cli = debian_binary("redis-cli", "redis-tools", self.log)
        cmd = [
            cli,
            "--cluster",
            "create",
            *(n.address for n in nodes),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ]
        self.log(f"redis cluster: creating it ({len(nodes) // 2} masters, {len(nodes) // 2} replicas)")
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise StackError(
                f"`redis-cli --cluster create` failed:\n{(result.stdout + result.stderr)[-2000:]}"
            )

    def _wait(self, name: str, check: Callable[[], bool], timeout: float, log: Path) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
        raise StackError(f"{name} did not answer within {timeout:.0f}s; last log lines:\n" + "\n".join(tail))

    # ---- down -----------------------------------------------------------------------------
    def down(self, timeout: float = 60.0) -> list[str]:
        """Stop every process of the stack: all at once (a KRaft node whose quorum is gone
        waits long for it), each killed if it has not stopped within `timeout`."""
        nodes = {n.name: n for n in [*self.kafka_nodes(), *self.kafka_nodes(StackShape())]}
        running = [(n.name, self._kafka_node_pid(n)) for n in nodes.values()]
        running.append(("redis", self.redis_pid()))
        running += [(n.name, self._redis_node_pid(n)) for n in self.redis_cluster_nodes()]
        targets = [(name, pid) for name, pid in running if pid is not None]
        for _name, pid in targets:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for _n, pid in targets) and time.monotonic() < deadline:
            time.sleep(0.2)
        stopped = []
        for name, pid in targets:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            (self.root / f"{name}.pid").unlink(missing_ok=True)
            stopped.append(f"{name} (pid {pid})")
        (self.root / "shape.json").unlink(missing_ok=True)
        return stopped


def debian_binary(binary: str, package: str, log: Callable[[str], None]) -> str:
    """The path of ``binary``, installing Debian's ``package`` with apt-get first if it is missing
    (as root; otherwise a one-line StackError saying what to install)."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(f"{binary} is missing: install it with `sudo apt-get install {package}`")
    log(f"{package}: installing Debian's {package} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise StackError(f"`{' '.join(cmd)}` failed:\n{result.stderr.strip()[-2000:]}")
    found = shutil.which(binary) or f"/usr/bin/{binary}"
    if not Path(found).exists():
        raise StackError(f"apt-get installed {package} but {binary} was not found")
    return found
